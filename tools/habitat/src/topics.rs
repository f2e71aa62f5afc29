//! `habitat topics apply`: makes the broker's topics match `topics.yaml`.
//!
//! Idempotent: creates what is missing, reports configuration drift (from
//! DescribeConfigs) and alters it only with `--alter`, never deletes a topic. A partition
//! count that differs is reported; it is never changed here.

use std::{collections::BTreeMap, fmt, time::Duration};

use anyhow::{Context, Result, bail};
use contracts::topology::{TopicSpec, Topology};
use rdkafka::{
    ClientConfig,
    admin::{
        AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication,
    },
    client::DefaultClientContext,
    types::RDKafkaErrorCode,
};

use crate::kafka::config;

const TIMEOUT: Duration = Duration::from_secs(15);

/// One thing `apply` found or did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Created(String),
    WouldCreate(String),
    Unchanged(String),
    Drift {
        topic: String,
        key: String,
        actual: Option<String>,
        desired: String,
        altered: bool,
    },
    PartitionsDiffer {
        topic: String,
        actual: usize,
        desired: i32,
    },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Created(topic) => write!(f, "created   {topic}"),
            Self::WouldCreate(topic) => write!(f, "missing   {topic} (would create)"),
            Self::Unchanged(topic) => write!(f, "ok        {topic}"),
            Self::Drift {
                topic,
                key,
                actual,
                desired,
                altered,
            } => write!(
                f,
                "{} {topic} {key}: {} -> {desired}",
                if *altered { "altered  " } else { "drift    " },
                actual.as_deref().unwrap_or("(unset)")
            ),
            Self::PartitionsDiffer {
                topic,
                actual,
                desired,
            } => write!(
                f,
                "drift     {topic} partitions: {actual} -> {desired} (not changed by apply)"
            ),
        }
    }
}

/// What to do about differences.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mode {
    /// Report only: create nothing, alter nothing.
    pub dry_run: bool,
    /// Alter drifted configuration (without it, drift is reported only).
    pub alter: bool,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Makes the broker's topics match `topology` for `environment`.
pub fn apply(
    bootstrap: &str,
    topology: &Topology,
    environment: &str,
    mode: Mode,
) -> Result<Vec<Action>> {
    apply_with(&config(bootstrap), topology, environment, mode)
}

/// [`apply`] with a client configured by the caller (security settings).
pub fn apply_with(
    client: &ClientConfig,
    topology: &Topology,
    environment: &str,
    mode: Mode,
) -> Result<Vec<Action>> {
    let specs = topology.all_topics(environment)?;
    let admin: AdminClient<DefaultClientContext> = client
        .clone()
        .set("socket.connection.setup.timeout.ms", "5000")
        .create()?;
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(5))
        .map_err(|e| {
            let bootstrap = client.get("bootstrap.servers").unwrap_or_default();
            anyhow::anyhow!("cannot reach the Kafka broker at {bootstrap}: {e}")
        })?;
    let existing: BTreeMap<String, usize> = metadata
        .topics()
        .iter()
        .map(|t| (t.name().to_owned(), t.partitions().len()))
        .collect();
    let runtime = runtime()?;
    let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    let mut actions = Vec::new();
    for spec in &specs {
        match existing.get(&spec.name) {
            None if mode.dry_run => actions.push(Action::WouldCreate(spec.name.clone())),
            None => {
                create(&runtime, &admin, &options, spec)?;
                actions.push(Action::Created(spec.name.clone()));
            }
            Some(partitions) => {
                let before = actions.len();
                if *partitions != spec.partitions as usize {
                    actions.push(Action::PartitionsDiffer {
                        topic: spec.name.clone(),
                        actual: *partitions,
                        desired: spec.partitions,
                    });
                }
                actions.extend(drift(&runtime, &admin, &options, spec, mode)?);
                if actions.len() == before {
                    actions.push(Action::Unchanged(spec.name.clone()));
                }
            }
        }
    }
    Ok(actions)
}

fn create(
    runtime: &tokio::runtime::Runtime,
    admin: &AdminClient<DefaultClientContext>,
    options: &AdminOptions,
    spec: &TopicSpec,
) -> Result<()> {
    let mut topic = NewTopic::new(
        &spec.name,
        spec.partitions,
        TopicReplication::Fixed(spec.replication_factor),
    );
    for (key, value) in &spec.config {
        topic = topic.set(key, value);
    }
    for result in runtime.block_on(admin.create_topics(&[topic], options))? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => bail!("cannot create {topic}: {code}"),
        }
    }
    Ok(())
}

fn drift(
    runtime: &tokio::runtime::Runtime,
    admin: &AdminClient<DefaultClientContext>,
    options: &AdminOptions,
    spec: &TopicSpec,
    mode: Mode,
) -> Result<Vec<Action>> {
    let described = runtime
        .block_on(admin.describe_configs(&[ResourceSpecifier::Topic(&spec.name)], options))?
        .into_iter()
        .next()
        .context("no DescribeConfigs answer")?
        .map_err(|code| anyhow::anyhow!("cannot describe {}: {code}", spec.name))?;
    let actual: BTreeMap<&str, Option<&str>> = described
        .entries
        .iter()
        .map(|entry| (entry.name.as_str(), entry.value.as_deref()))
        .collect();
    let drifted: Vec<(&String, &String)> = spec
        .config
        .iter()
        .filter(|(key, desired)| {
            actual.get(key.as_str()).copied().flatten() != Some(desired.as_str())
        })
        .collect();
    let alter = mode.alter && !mode.dry_run && !drifted.is_empty();
    if alter {
        let mut change = AlterConfig::new(ResourceSpecifier::Topic(&spec.name));
        // The classic AlterConfigs replaces a topic's settings: send every desired one.
        for (key, value) in &spec.config {
            change = change.set(key, value);
        }
        for result in runtime.block_on(admin.alter_configs(&[change], options))? {
            result.map_err(|(_, code)| anyhow::anyhow!("cannot alter {}: {code}", spec.name))?;
        }
    }
    Ok(drifted
        .into_iter()
        .map(|(key, desired)| Action::Drift {
            topic: spec.name.clone(),
            key: key.clone(),
            actual: actual
                .get(key.as_str())
                .copied()
                .flatten()
                .map(str::to_owned),
            desired: desired.clone(),
            altered: alter,
        })
        .collect())
}
