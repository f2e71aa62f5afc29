//! The cluster's id and the shape of its topics, asked of the broker once each and kept.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use rdkafka::{
    ClientConfig,
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
};

/// Why the broker could not say.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("the broker's metadata: {0}")]
    Kafka(#[from] KafkaError),
    #[error("topic {0} has no partitions (does it exist?)")]
    NoSuchTopic(String),
    #[error("the broker did not tell its cluster id")]
    NoClusterId,
    #[error("the metadata request was cancelled: {0}")]
    Cancelled(#[from] tokio::task::JoinError),
}

/// What the broker says of a topic: its partitions and their replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopicShape {
    pub partitions: i32,
    pub replication_factor: i32,
}

/// The cluster's id and the shape of its topics, asked of the broker once each.
pub struct Partitions {
    client: ClientConfig,
    known: RwLock<HashMap<String, TopicShape>>,
    cluster: RwLock<Option<String>>,
}

impl Partitions {
    pub fn new(client: ClientConfig) -> Self {
        Self {
            client,
            known: RwLock::new(HashMap::new()),
            cluster: RwLock::new(None),
        }
    }

    /// The partition count of `topic`.
    pub async fn of(self: &Arc<Self>, topic: &str) -> Result<i32, MetadataError> {
        Ok(self.shape(topic).await?.partitions)
    }

    /// Partitions and replication factor of `topic`.
    pub async fn shape(self: &Arc<Self>, topic: &str) -> Result<TopicShape, MetadataError> {
        if let Some(shape) = self.known.read().expect("partitions lock").get(topic) {
            return Ok(*shape);
        }
        let name = topic.to_owned();
        let shape = self
            .ask(move |consumer| {
                let metadata = consumer.fetch_metadata(Some(&name), Duration::from_secs(5))?;
                let topic = metadata.topics().first();
                let partitions = topic.map_or(0, |t| t.partitions().len());
                let replicas = topic
                    .and_then(|t| t.partitions().first())
                    .map_or(0, |p| p.replicas().len());
                Ok(TopicShape {
                    partitions: i32::try_from(partitions)
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| MetadataError::NoSuchTopic(name.clone()))?,
                    replication_factor: i32::try_from(replicas).unwrap_or(i32::MAX),
                })
            })
            .await?;
        _ = self
            .known
            .write()
            .expect("partitions lock")
            .insert(topic.to_owned(), shape);
        Ok(shape)
    }

    /// The id the broker gives its cluster.
    pub async fn cluster_id(self: &Arc<Self>) -> Result<String, MetadataError> {
        if let Some(id) = self.cluster.read().expect("cluster lock").clone() {
            return Ok(id);
        }
        let id = self
            .ask(|consumer| {
                consumer
                    .client()
                    .fetch_cluster_id(Duration::from_secs(5))
                    .ok_or(MetadataError::NoClusterId)
            })
            .await?;
        *self.cluster.write().expect("cluster lock") = Some(id.clone());
        Ok(id)
    }

    async fn ask<T: Send + 'static>(
        self: &Arc<Self>,
        question: impl FnOnce(&BaseConsumer) -> Result<T, MetadataError> + Send + 'static,
    ) -> Result<T, MetadataError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = this.client.create()?;
            question(&consumer)
        })
        .await?
    }
}
