//! The environment layer of every program's configuration: `HABITAT_<SETTING>` variables
//! applied to a configuration by its settings' names and types, what a program made of the
//! `HABITAT_*` variables it was given, and the `--print-config` report with secrets masked.

use std::collections::BTreeSet;

use serde::Serialize;

use super::{ConfigError, KafkaSettings, redact_url};

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
    let mut kafka: Option<KafkaSettings> = fields
        .get("kafka")
        .map(|settings| serde_json::from_value(settings.clone()).unwrap_or_default());
    let mut read = Vec::new();
    for (name, value) in vars {
        let Some(variable) = name.strip_prefix("HABITAT_") else {
            continue;
        };
        if let Some(kafka) = kafka.as_mut()
            && kafka.apply_env(variable, value.clone())
        {
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
    if let Some(kafka) = kafka {
        _ = fields.insert(
            "kafka".to_owned(),
            serde_json::to_value(kafka).unwrap_or_default(),
        );
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

/// The variables every program reads before its configuration: logging, and how its
/// memory is managed ([`crate::memory::configure`]).
pub fn process_variables() -> impl Iterator<Item = &'static str> {
    LOG_VARIABLES
        .into_iter()
        .chain([crate::memory::HUGE_PAGES_VARIABLE])
}

/// What a program made of the `HABITAT_*` variables of its environment: those it read, and
/// those it has no setting for (a typo, or a variable meant for another program).
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct EnvUse {
    pub read: BTreeSet<String>,
    pub ignored: BTreeSet<String>,
}

impl EnvUse {
    /// Sorts the `HABITAT_*` names of `vars` into read (named in `read`, or one of the
    /// [`process_variables`]) and ignored.
    pub fn of(
        vars: impl IntoIterator<Item = (String, String)>,
        read: impl IntoIterator<Item = String>,
    ) -> Self {
        let known: BTreeSet<String> = read
            .into_iter()
            .chain(process_variables().map(str::to_owned))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RuntimeConfig;

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
    fn every_program_reads_the_logging_and_memory_variables() {
        let vars = [
            ("HABITAT_LOG", "info"),
            ("HABITAT_TRANSPARENT_HUGE_PAGES", "on"),
            ("HABITAT_COMMIT_INTERVAL_MS", "50"),
            ("HABITAT_COMIT_INTERVAL_MS", "50"),
            ("PATH", "/bin"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let use_ = EnvUse::of(vars, ["HABITAT_COMMIT_INTERVAL_MS".to_owned()]);
        assert_eq!(
            use_.read.iter().map(String::as_str).collect::<Vec<_>>(),
            [
                "HABITAT_COMMIT_INTERVAL_MS",
                "HABITAT_LOG",
                "HABITAT_TRANSPARENT_HUGE_PAGES"
            ]
        );
        assert_eq!(
            use_.ignored.iter().map(String::as_str).collect::<Vec<_>>(),
            ["HABITAT_COMIT_INTERVAL_MS"]
        );
    }
}
