//! A processor's configuration: defaults here, then a YAML file, then `HABITAT_*`
//! environment variables, then flags (see [`crate::runner`]).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::SocketAddr,
    path::PathBuf,
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::codec::CodecError;

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

/// Applies `HABITAT_<FIELD>` variables to the settings of `config` — every top-level field
/// by its name upper-cased, or by the variable `aliases` give it (`("SINK_SCHEMA",
/// "schema")`) — and `HABITAT_KAFKA_<NAME>` variables to its `kafka` settings. A value is
/// read as the field's type: a number, a boolean, a comma-separated list, or text. Returns
/// the names it read; a value that does not fit names the variable (and the value, unless
/// it is a secret).
pub fn apply_env_fields<T>(
    config: &mut T,
    vars: impl IntoIterator<Item = (String, String)>,
    aliases: &[(&str, &str)],
) -> Result<Vec<String>, ConfigError>
where
    T: Serialize + serde::de::DeserializeOwned,
{
    let mut fields = match serde_json::to_value(&*config) {
        Ok(serde_json::Value::Object(fields)) => fields,
        _ => return Ok(Vec::new()),
    };
    let mut read = Vec::new();
    for (name, value) in vars {
        let Some(variable) = name.strip_prefix("HABITAT_") else {
            continue;
        };
        if variable.starts_with("KAFKA_")
            && let Some(kafka) = fields.get_mut("kafka")
        {
            let mut settings: KafkaSettings =
                serde_json::from_value(kafka.take()).unwrap_or_default();
            _ = settings.apply_env(variable, value);
            *kafka = serde_json::to_value(settings).unwrap_or_default();
            read.push(name);
            continue;
        }
        let field = aliases
            .iter()
            .find(|(alias, _)| *alias == variable)
            .map_or_else(|| variable.to_ascii_lowercase(), |(_, f)| (*f).to_owned());
        let Some(current) = fields.get(&field) else {
            continue;
        };
        let mut candidate = fields.clone();
        _ = candidate.insert(field.clone(), typed_like(current, &value));
        if let Err(error) =
            serde_json::from_value::<T>(serde_json::Value::Object(candidate.clone()))
        {
            return Err(if is_secret_setting(&field) {
                ConfigError::secret(variable, error)
            } else {
                ConfigError::variable(variable, &value, error)
            });
        }
        fields = candidate;
        read.push(name);
    }
    if let Ok(applied) = serde_json::from_value(serde_json::Value::Object(fields)) {
        *config = applied;
    }
    Ok(read)
}

/// `text` as a JSON value of `current`'s kind.
fn typed_like(current: &serde_json::Value, text: &str) -> serde_json::Value {
    use serde_json::Value;
    match current {
        Value::Number(_) => serde_json::from_str(text.trim())
            .ok()
            .filter(Value::is_number)
            .unwrap_or_else(|| Value::String(text.to_owned())),
        Value::Bool(_) => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Value::Bool(true),
            "false" | "0" | "no" | "off" => Value::Bool(false),
            _ => Value::String(text.to_owned()),
        },
        Value::Array(_) => Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| Value::String(item.to_owned()))
                .collect(),
        ),
        _ => Value::String(text.to_owned()),
    }
}

/// A setting whose value never prints: credentials, passwords, tokens.
fn is_secret_setting(key: &str) -> bool {
    key.ends_with("_auth") || KafkaSettings::is_secret(key)
}

/// A configuration as `--print-config` shows it: its JSON with every secret masked
/// (`user:***` for credentials, `***` for passwords and tokens, URLs without their
/// password).
pub fn redacted(config: &impl Serialize) -> serde_json::Value {
    fn walk(key: &str, value: serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match value {
            Value::Object(fields) => Value::Object(
                fields
                    .into_iter()
                    .map(|(k, v)| {
                        let v = walk(&k, v);
                        (k, v)
                    })
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.into_iter().map(|v| walk(key, v)).collect()),
            Value::String(text) if is_secret_setting(key) => {
                Value::String(match text.split_once(':') {
                    Some((user, _)) if key.ends_with("_auth") => format!("{user}:***"),
                    _ => "***".to_owned(),
                })
            }
            Value::String(text) if text.contains("://") => match url::Url::parse(&text) {
                Ok(url) if url.password().is_some() => Value::String(redact_url(&text)),
                _ => Value::String(text),
            },
            other => other,
        }
    }
    walk("", serde_json::to_value(config).unwrap_or_default())
}

/// The variables the logging set-up of every program reads.
pub const LOG_VARIABLES: [&str; 2] = ["HABITAT_LOG", "HABITAT_LOG_FORMAT"];

/// What a program made of the `HABITAT_*` variables of its environment: those it read, and
/// those it has no setting for (a typo, or a variable meant for another program).
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct EnvUse {
    pub read: BTreeSet<String>,
    pub ignored: BTreeSet<String>,
}

impl EnvUse {
    /// Sorts the `HABITAT_*` names of `vars` into read (named in `read`, or a logging
    /// variable) and ignored.
    pub fn of(
        vars: impl IntoIterator<Item = (String, String)>,
        read: impl IntoIterator<Item = String>,
    ) -> Self {
        let known: BTreeSet<String> = read
            .into_iter()
            .chain(LOG_VARIABLES.iter().map(|v| (*v).to_owned()))
            .collect();
        let mut use_ = Self::default();
        for (name, _) in vars {
            if !name.starts_with("HABITAT_") {
                continue;
            }
            if known.contains(&name) {
                _ = use_.read.insert(name);
            } else {
                _ = use_.ignored.insert(name);
            }
        }
        use_
    }

    /// Logs a warning for every ignored variable.
    pub fn warn_ignored(&self) {
        for name in &self.ignored {
            tracing::warn!(variable = %name, "This program has no setting for {name}; it is ignored.");
        }
    }

    /// What `--print-config` prints: the program, its settings (secrets masked, see
    /// [`redacted`]), and the variables read and ignored, as one JSON object.
    pub fn config_report(&self, program: &str, config: &impl Serialize) -> String {
        serde_json::json!({
            "program": program,
            "config": redacted(config),
            "variables": self,
        })
        .to_string()
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

    /// Every setting can be given by a `HABITAT_<FIELD>` variable (Kubernetes mounts no
    /// file), read as the field's type.
    #[test]
    fn every_setting_is_reachable_by_environment() {
        let defaults = serde_json::to_value(RuntimeConfig::default()).expect("JSON");
        let fields = defaults.as_object().expect("an object");
        let example = |value: &serde_json::Value| match value {
            serde_json::Value::Number(_) => "7".to_owned(),
            serde_json::Value::Bool(b) => (!b).to_string(),
            serde_json::Value::Array(_) => "habitat.people, habitat.treasury".to_owned(),
            _ => "127.0.0.1:9999".to_owned(),
        };
        for (field, value) in fields {
            if field == "kafka" {
                continue;
            }
            let variable = format!("HABITAT_{}", field.to_ascii_uppercase());
            let mut config = RuntimeConfig::default();
            let text = if field == "schema_registry_auth" {
                "habitat:secret".to_owned()
            } else {
                example(value)
            };
            let read = config
                .apply_env([(variable.clone(), text)])
                .unwrap_or_else(|e| panic!("{variable}: {e}"));
            assert_eq!(read, std::slice::from_ref(&variable));
            let after = serde_json::to_value(&config).expect("JSON");
            assert_ne!(&after[field], value, "{variable} changed nothing");
        }
        let mut config = RuntimeConfig::default();
        _ = config
            .apply_env([("HABITAT_INPUTS".to_owned(), "a, b".to_owned())])
            .expect("a list");
        assert_eq!(config.inputs, ["a", "b"]);
        let refused = RuntimeConfig::default()
            .apply_env([("HABITAT_COMMIT_INTERVAL_MS".to_owned(), "soon".to_owned())])
            .expect_err("not a number");
        assert!(
            refused
                .to_string()
                .starts_with("HABITAT_COMMIT_INTERVAL_MS=soon"),
            "{refused}"
        );
        let refused = RuntimeConfig::default()
            .apply_env([(
                "HABITAT_SCHEMA_REGISTRY_AUTH".to_owned(),
                "nocolon".to_owned(),
            )])
            .expect_err("not user:password");
        assert!(!refused.to_string().contains("nocolon"), "{refused}");
    }

    #[test]
    fn print_config_is_json_with_secrets_masked() {
        let mut config = RuntimeConfig::default();
        _ = config
            .apply_env([
                (
                    "HABITAT_KAFKA_SASL_PASSWORD".to_owned(),
                    "hunter2".to_owned(),
                ),
                (
                    "HABITAT_SCHEMA_REGISTRY_AUTH".to_owned(),
                    "habitat:s3cret".to_owned(),
                ),
                (
                    "HABITAT_SCHEMA_REGISTRY_URL".to_owned(),
                    "https://reader:pw1@registry:8081".to_owned(),
                ),
            ])
            .expect("valid");
        let report: serde_json::Value =
            serde_json::from_str(&EnvUse::default().config_report("patronage-aggregator", &config))
                .expect("JSON");
        let shown = &report["config"];
        assert_eq!(shown["commit_interval_ms"], 100);
        assert_eq!(shown["kafka"]["sasl.password"], "***");
        assert_eq!(shown["schema_registry_auth"], "habitat:***");
        assert_eq!(
            shown["schema_registry_url"],
            "https://reader:***@registry:8081/"
        );
        let text = report.to_string();
        for secret in ["hunter2", "s3cret", "pw1"] {
            assert!(!text.contains(secret), "{text}");
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let error = RuntimeConfig::from_yaml("comit_interval_ms: 5\n").expect_err("typo");
        assert!(error.to_string().contains("comit_interval_ms"), "{error}");
    }
}
