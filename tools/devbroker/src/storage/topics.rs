//! Topics as produces and fetches ask for them: names, ids and partition counts from
//! Tansu's engine, kept until a topic is created or deleted (the engine's metadata is a
//! lookup in its store per call; fetches come thousands of times a second).

use tansu_sans_io::ErrorCode;
use tansu_storage::{Error, Result, Storage, TopicId, Topition};

use super::DevStorage;

/// A topic as a fetch needs it.
#[derive(Clone, Debug)]
pub struct TopicInfo {
    pub name: String,
    pub partitions: i32,
    pub id: Option<[u8; 16]>,
}

impl DevStorage {
    /// A topic's name, partition count and id; `None` when it does not exist.
    pub async fn topic_info(&self, topic: &TopicId) -> Result<Option<TopicInfo>> {
        if let Some(info) = self.topics.lock().expect("topics lock").get(topic) {
            return Ok(Some(info.clone()));
        }
        let metadata = self
            .inner
            .metadata(Some(std::slice::from_ref(topic)))
            .await?;
        let info = metadata
            .topics()
            .first()
            .filter(|t| t.error_code == i16::from(ErrorCode::None))
            .and_then(|t| {
                Some(TopicInfo {
                    name: t.name.clone()?,
                    partitions: t.partitions.as_ref().map_or(0, |p| p.len() as i32),
                    id: t.topic_id,
                })
            });
        if let Some(info) = &info {
            _ = self
                .topics
                .lock()
                .expect("topics lock")
                .insert(topic.clone(), info.clone());
        }
        Ok(info)
    }

    pub(super) fn forget_topics(&self, name: &str) {
        _ = self
            .partition_counts
            .lock()
            .expect("partition count lock")
            .remove(name);
        self.topics.lock().expect("topics lock").clear();
    }

    /// The partition count of a topic, or `None` when the topic does not exist.
    pub async fn partition_count(&self, topic: &str) -> Result<Option<i32>> {
        if let Some(count) = self
            .partition_counts
            .lock()
            .expect("partition count lock")
            .get(topic)
        {
            return Ok(Some(*count));
        }
        let metadata = self
            .inner
            .metadata(Some(&[TopicId::Name(topic.to_owned())]))
            .await?;
        let count = metadata.topics().iter().find_map(|t| {
            (t.name.as_deref() == Some(topic) && t.error_code == i16::from(ErrorCode::None))
                .then(|| t.partitions.as_ref().map_or(0, |p| p.len() as i32))
        });
        if let Some(count) = count {
            _ = self
                .partition_counts
                .lock()
                .expect("partition count lock")
                .insert(topic.to_owned(), count);
        }
        Ok(count)
    }

    pub(super) async fn check_partition(&self, topition: &Topition) -> Result<()> {
        match self.partition_count(topition.topic()).await? {
            Some(count) if (0..count).contains(&topition.partition()) => Ok(()),
            _ => Err(Error::Api(ErrorCode::UnknownTopicOrPartition)),
        }
    }
}
