//! `topics.yaml`: every topic, its configuration, its record types with key, writer and
//! readers, and the naming conventions of internal topics.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The `topics.yaml` this build was made with.
pub const TOPICS_YAML: &str = include_str!("../../../topics.yaml");

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Replication settings per environment (`dev`, `production`).
    pub environments: BTreeMap<String, Environment>,
    /// Settings every context topic starts from.
    pub context_defaults: TopicDefaults,
    /// The context topics.
    pub topics: Vec<ContextTopic>,
    /// Conventions of the topics the runtime creates.
    pub internal: Internal,
    /// Every processor (and the sink), for the internal topics they own.
    pub processors: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    pub replication_factor: i32,
    pub min_insync_replicas: i32,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicDefaults {
    pub partitions: i32,
    pub config: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextTopic {
    pub name: String,
    pub context: String,
    #[serde(default)]
    pub partitions: Option<i32>,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    pub records: Vec<RecordBinding>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RecordBinding {
    #[serde(rename = "type")]
    pub full_name: String,
    pub key: String,
    pub writer: String,
    pub readers: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Internal {
    pub changelog: InternalTopic,
    pub dead_letter: InternalTopic,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InternalTopic {
    /// Name pattern with `{processor}` (and `{store}` for changelogs).
    pub name: String,
    pub partitions: i32,
    pub config: BTreeMap<String, String>,
}

/// A topic as it should exist on a broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i32,
    pub config: BTreeMap<String, String>,
}

/// `topics.yaml` could not be read.
#[derive(Debug, thiserror::Error)]
#[error("topics.yaml: {0}")]
pub struct TopologyError(String);

impl Topology {
    /// The topology this build was made with.
    pub fn embedded() -> Self {
        Self::parse(TOPICS_YAML).expect("the embedded topics.yaml is checked at build time")
    }

    pub fn parse(yaml: &str) -> Result<Self, TopologyError> {
        serde_norway::from_str(yaml).map_err(|e| TopologyError(e.to_string()))
    }

    /// A deployment's own `topics.yaml` (partitions, replication and topic settings of its
    /// cluster) checked against this build's: topic names, record types, keys, writers,
    /// readers, processors and internal topic names come with the release and must match.
    pub fn parse_deployed(yaml: &str) -> Result<Self, TopologyError> {
        let deployed = Self::parse(yaml)?;
        let built = Self::embedded();
        let mismatch = |what: &str| {
            Err(TopologyError(format!(
                "{what} differ from this release's topics.yaml; a deployment may change \
                 partitions, replication and topic settings only"
            )))
        };
        let names = |t: &Self| -> Vec<(String, String)> {
            t.topics
                .iter()
                .map(|topic| (topic.name.clone(), topic.context.clone()))
                .collect()
        };
        if names(&deployed) != names(&built) {
            return mismatch("the context topics");
        }
        for (mine, theirs) in deployed.topics.iter().zip(&built.topics) {
            if mine.records != theirs.records {
                return mismatch(&format!("the records of {}", mine.name));
            }
        }
        if deployed.processors != built.processors {
            return mismatch("the processors");
        }
        if deployed.internal.changelog.name != built.internal.changelog.name
            || deployed.internal.dead_letter.name != built.internal.dead_letter.name
        {
            return mismatch("the internal topic names");
        }
        Ok(deployed)
    }

    fn environment(&self, environment: &str) -> Result<&Environment, TopologyError> {
        self.environments.get(environment).ok_or_else(|| {
            TopologyError(format!(
                "no environment {environment:?}; known: {}",
                self.environments
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }

    fn with_replication(
        &self,
        environment: &str,
        mut config: BTreeMap<String, String>,
    ) -> Result<(i32, BTreeMap<String, String>), TopologyError> {
        let env = self.environment(environment)?;
        _ = config.insert(
            "min.insync.replicas".to_owned(),
            env.min_insync_replicas.to_string(),
        );
        Ok((env.replication_factor, config))
    }

    /// The context topics with their full configuration for an environment.
    pub fn context_topics(&self, environment: &str) -> Result<Vec<TopicSpec>, TopologyError> {
        self.topics
            .iter()
            .map(|topic| {
                let mut config = self.context_defaults.config.clone();
                config.extend(topic.config.clone());
                let (replication_factor, config) = self.with_replication(environment, config)?;
                Ok(TopicSpec {
                    name: topic.name.clone(),
                    partitions: topic.partitions.unwrap_or(self.context_defaults.partitions),
                    replication_factor,
                    config,
                })
            })
            .collect()
    }

    /// The dead-letter topic of a processor.
    pub fn dead_letter_topic(&self, processor: &str) -> String {
        self.internal
            .dead_letter
            .name
            .replace("{processor}", processor)
    }

    /// The changelog topic of a processor's state store.
    pub fn changelog_topic(&self, processor: &str, store: &str) -> String {
        self.internal
            .changelog
            .name
            .replace("{processor}", processor)
            .replace("{store}", store)
    }

    /// Every topic to create for an environment: the context topics and each processor's
    /// dead-letter topic. (Changelogs are created by the runtime, which knows the stores.)
    pub fn all_topics(&self, environment: &str) -> Result<Vec<TopicSpec>, TopologyError> {
        let mut topics = self.context_topics(environment)?;
        for processor in &self.processors {
            topics.push(self.dead_letter_spec(processor, environment)?);
        }
        Ok(topics)
    }

    /// The dead-letter topic spec of a processor.
    pub fn dead_letter_spec(
        &self,
        processor: &str,
        environment: &str,
    ) -> Result<TopicSpec, TopologyError> {
        let (replication_factor, config) =
            self.with_replication(environment, self.internal.dead_letter.config.clone())?;
        Ok(TopicSpec {
            name: self.dead_letter_topic(processor),
            partitions: self.internal.dead_letter.partitions,
            replication_factor,
            config,
        })
    }

    /// The context topics a processor reads: those with a record naming it as a reader.
    pub fn inputs_of(&self, processor: &str) -> Vec<String> {
        self.topics
            .iter()
            .filter(|t| {
                t.records
                    .iter()
                    .any(|r| r.readers.iter().any(|reader| reader == processor))
            })
            .map(|t| t.name.clone())
            .collect()
    }

    /// The record types (full names) a processor reads.
    pub fn records_read_by(&self, processor: &str) -> Vec<String> {
        self.topics
            .iter()
            .flat_map(|t| &t.records)
            .filter(|r| r.readers.iter().any(|reader| reader == processor))
            .map(|r| r.full_name.clone())
            .collect()
    }

    /// The changelog topic spec of a processor's store.
    pub fn changelog_spec(
        &self,
        processor: &str,
        store: &str,
        environment: &str,
    ) -> Result<TopicSpec, TopologyError> {
        self.output_spec(&self.changelog_topic(processor, store), environment)
    }

    /// How a processor's own output topic (a derived view) is created: compacted as its
    /// changelogs are, under the name it gives.
    pub fn output_spec(&self, topic: &str, environment: &str) -> Result<TopicSpec, TopologyError> {
        let (replication_factor, config) =
            self.with_replication(environment, self.internal.changelog.config.clone())?;
        Ok(TopicSpec {
            name: topic.to_owned(),
            partitions: self.internal.changelog.partitions,
            replication_factor,
            config,
        })
    }

    /// The topic, key pattern, writer and readers of a record type.
    pub fn binding(&self, full_name: &str) -> Option<(&ContextTopic, &RecordBinding)> {
        self.topics.iter().find_map(|topic| {
            topic
                .records
                .iter()
                .find(|r| r.full_name == full_name)
                .map(|r| (topic, r))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deployment_may_change_partitions_and_settings_but_not_the_catalog() {
        let more = TOPICS_YAML.replacen("  partitions: 6", "  partitions: 24", 1);
        let deployed = Topology::parse_deployed(&more).unwrap();
        assert_eq!(
            deployed.context_topics("production").unwrap()[0].partitions,
            24
        );
        assert_eq!(
            deployed.context_topics("production").unwrap()[0].replication_factor,
            3
        );

        let rekeyed = TOPICS_YAML.replacen(
            "key: \"{tenant_id}/member/{member_id}\"",
            "key: \"{member_id}\"",
            1,
        );
        assert_ne!(rekeyed, TOPICS_YAML);
        let error = Topology::parse_deployed(&rekeyed).unwrap_err().to_string();
        assert!(error.contains("the records of habitat.people"), "{error}");

        let renamed = TOPICS_YAML.replacen("name: habitat.treasury", "name: treasury", 1);
        let error = Topology::parse_deployed(&renamed).unwrap_err().to_string();
        assert!(error.contains("the context topics"), "{error}");
    }

    #[test]
    fn context_topics_are_compacted_with_six_partitions() {
        let topology = Topology::embedded();
        let topics = topology.context_topics("dev").unwrap();
        let names: Vec<_> = topics.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            ["habitat.people", "habitat.treasury", "habitat.agreements"]
        );
        for topic in &topics {
            assert_eq!(topic.partitions, 6);
            assert_eq!(topic.replication_factor, 1);
            assert_eq!(topic.config["cleanup.policy"], "compact");
            assert!(topic.config.contains_key("min.compaction.lag.ms"));
            assert!(topic.config.contains_key("segment.ms"));
            assert_eq!(topic.config["min.insync.replicas"], "1");
        }
        let production = topology.context_topics("production").unwrap();
        assert_eq!(production[0].replication_factor, 3);
        assert_eq!(production[0].config["min.insync.replicas"], "2");
    }

    #[test]
    fn internal_topics_follow_their_conventions() {
        let topology = Topology::embedded();
        assert_eq!(
            topology.changelog_topic("patronage-aggregator", "contributions"),
            "patronage-aggregator-contributions-changelog"
        );
        assert_eq!(
            topology.dead_letter_topic("allocation-calculator"),
            "habitat.dlq.allocation-calculator"
        );
        let all = topology.all_topics("dev").unwrap();
        assert_eq!(all.len(), 3 + topology.processors.len());
    }

    #[test]
    fn an_unknown_environment_is_named() {
        let error = Topology::embedded().context_topics("staging").unwrap_err();
        assert!(
            error.to_string().contains("no environment \"staging\""),
            "{error}"
        );
    }
}
