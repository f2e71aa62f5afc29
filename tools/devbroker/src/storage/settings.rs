//! Topics' log settings through the control plane: read from the engine's store (on start
//! and before an alter), and reported by DescribeConfigs with Kafka's defaults filled in.

use tansu_sans_io::{
    ConfigResource, ConfigSource, ConfigType,
    describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult},
};
use tansu_storage::{Result, Storage};
use tracing::{info, warn};

use super::DevStorage;
use crate::log::{Settings, settings::DEFAULTS};

impl DevStorage {
    /// A topic's configs as set (name and value), from the control-plane engine.
    pub(super) async fn topic_configs(&self, topic: &str) -> Result<Vec<(String, Option<String>)>> {
        let described = self
            .inner
            .describe_config(topic, ConfigResource::Topic, None)
            .await?;
        Ok(described
            .configs
            .unwrap_or_default()
            .into_iter()
            .map(|c| (c.name, c.value))
            .collect())
    }

    /// Gives the log every existing topic's settings (on start, from the engine's store).
    pub async fn load_topic_settings(&self) -> Result<()> {
        let metadata = self.inner.metadata(None).await?;
        for topic in metadata.topics() {
            let Some(name) = topic.name.as_deref() else {
                continue;
            };
            let configs = self.topic_configs(name).await?;
            match Settings::parse(
                configs
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_deref())),
            ) {
                Ok(settings) => self.log.configure(name, settings),
                Err(invalid) => warn!(topic = name, %invalid, "Kafka's defaults apply instead."),
            }
        }
        info!(topics = metadata.topics().len(), "Topic settings loaded.");
        Ok(())
    }
}

/// A topic's described configs with the log's settings it leaves unset added at Kafka's
/// defaults (reported as such), and those it sets reported as topic configs.
pub(super) fn with_log_defaults(
    mut described: DescribeConfigsResult,
    keys: Option<&[String]>,
) -> DescribeConfigsResult {
    let mut configs = described.configs.take().unwrap_or_default();
    for config in &mut configs {
        if DEFAULTS.iter().any(|(name, _)| *name == config.name) {
            config.config_source = Some(ConfigSource::DynamicTopicConfig.into());
            config.is_default = Some(false);
        }
    }
    for (name, value) in DEFAULTS {
        let wanted = keys.is_none_or(|keys| keys.iter().any(|key| key == name));
        if wanted && !configs.iter().any(|config| config.name == name) {
            let config_type = match name {
                "cleanup.policy" => ConfigType::List,
                "min.cleanable.dirty.ratio" => ConfigType::Double,
                "segment.bytes" => ConfigType::Int,
                _ => ConfigType::Long,
            };
            configs.push(
                DescribeConfigsResourceResult::default()
                    .name(name.to_owned())
                    .value(Some(value.to_owned()))
                    .read_only(false)
                    .is_default(Some(true))
                    .config_source(Some(ConfigSource::DefaultConfig.into()))
                    .is_sensitive(false)
                    .synonyms(Some(vec![]))
                    .config_type(Some(config_type.into()))
                    .documentation(Some(String::new())),
            );
        }
    }
    described.configs = Some(configs);
    described
}
