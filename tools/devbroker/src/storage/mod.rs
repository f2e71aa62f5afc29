//! The storage devbroker serves: Tansu's engine for the control plane (topics, configs,
//! consumer groups, producer ids, transactional offset commits) and devbroker's own
//! [`Log`] for records, with the transaction coordinator's missing parts.
//!
//! Guarantee: a transaction's records become visible to read_committed readers only
//! when its commit marker is written, and never when it is aborted — by EndTxn, by a new
//! InitProducerId for its transactional id, or by its `transaction.timeout.ms` expiring.
//! Relies on [`Log`]'s per-partition lock and on Tansu's engine committing the
//! transaction's consumer offsets only on commit.

mod coordinator;
mod settings;
#[cfg(test)]
mod tests;
mod topics;
mod txn;

pub use topics::TopicInfo;

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use tansu_sans_io::{
    ConfigResource, ErrorCode, IsolationLevel, ListOffset, ScramMechanism,
    create_topics_request::CreatableTopic,
    delete_groups_response::DeletableGroupResult,
    delete_records_request::DeleteRecordsTopic,
    delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult},
    describe_cluster_response::DescribeClusterBroker,
    describe_configs_response::DescribeConfigsResult,
    describe_topic_partitions_response::DescribeTopicPartitionsResponseTopic,
    incremental_alter_configs_request::AlterConfigsResource,
    incremental_alter_configs_response::AlterConfigsResourceResponse,
    list_groups_response::ListedGroup,
    record::deflated,
    txn_offset_commit_response::TxnOffsetCommitResponseTopic,
};
use tansu_storage::{
    BrokerRegistrationRequest, Error, GroupDetail, ListOffsetResponse, MetadataResponse,
    NamedGroupDetail, OffsetCommitRequest, OffsetStage, ProducerIdResponse, Result,
    ScramCredential, Storage, StorageContainer, TopicId, Topition, TxnAddPartitionsRequest,
    TxnAddPartitionsResponse, TxnOffsetCommitRequest, UpdateError, Version,
};
use url::Url;
use uuid::Uuid;

use crate::log::{Log, Settings};
use coordinator::Coordinator;
use settings::with_log_defaults;
use tracing::warn;

/// Tansu's engine with devbroker's log and transaction coordinator in front of it.
#[derive(Clone, Debug)]
pub struct DevStorage {
    inner: StorageContainer,
    log: Arc<Log>,
    coordinator: Arc<Mutex<Coordinator>>,
    partition_counts: Arc<Mutex<HashMap<String, i32>>>,
    /// Topics by name or id, as fetches ask for them (Tansu's metadata is a lookup in its
    /// store per call; fetches come thousands of times a second). Forgotten on every topic
    /// created or deleted.
    topics: Arc<Mutex<HashMap<TopicId, TopicInfo>>>,
}

impl DevStorage {
    /// Storage held in memory only.
    pub fn in_memory(inner: StorageContainer) -> Self {
        Self::with(inner, Log::in_memory(), Coordinator::default())
    }

    /// Storage kept in `dir`: the coordinator's journal, then the log (a transaction the
    /// journal does not know as open is aborted in the log; see [`Log::open`]).
    pub fn durable(inner: StorageContainer, dir: &Path) -> std::io::Result<Self> {
        let coordinator = Coordinator::open(&dir.join("coordinator.journal"))?;
        let log = Log::open(&dir.join("log"), &coordinator.open_producers())?;
        Ok(Self::with(inner, log, coordinator))
    }

    fn with(inner: StorageContainer, log: Log, coordinator: Coordinator) -> Self {
        Self {
            inner,
            log: Arc::new(log),
            coordinator: Arc::new(Mutex::new(coordinator)),
            partition_counts: Arc::default(),
            topics: Arc::default(),
        }
    }

    pub fn log(&self) -> &Log {
        &self.log
    }

    /// The log, for the cleaner's own thread.
    pub fn shared_log(&self) -> Arc<Log> {
        self.log.clone()
    }

    fn offset_stage_of(&self, topition: &Topition) -> Result<OffsetStage> {
        let (last_stable, high_watermark, log_start) = self
            .log
            .with_partition(topition, |p| {
                (p.last_stable(), p.high_watermark(), p.log_start())
            })
            .map_err(Error::Api)?;
        serde_json::from_value(serde_json::json!({
            "last_stable": last_stable,
            "high_watermark": high_watermark,
            "log_start": log_start,
        }))
        .map_err(|error| Error::Message(error.to_string()))
    }
}

#[async_trait]
impl Storage for DevStorage {
    async fn register_broker(&self, broker_registration: BrokerRegistrationRequest) -> Result<()> {
        self.inner.register_broker(broker_registration).await
    }

    async fn create_topic(&self, topic: CreatableTopic, validate_only: bool) -> Result<Uuid> {
        let name = topic.name.clone();
        let settings = Settings::parse(
            topic
                .configs
                .as_deref()
                .unwrap_or_default()
                .iter()
                .map(|c| (c.name.as_str(), c.value.as_deref())),
        )
        .map_err(|invalid| {
            warn!(topic = name, %invalid, "Topic refused.");
            Error::Api(ErrorCode::InvalidConfig)
        })?;
        let id = self.inner.create_topic(topic, validate_only).await?;
        if !validate_only {
            self.log.configure(&name, settings);
        }
        self.forget_topics(&name);
        Ok(id)
    }

    async fn incremental_alter_resource(
        &self,
        resource: AlterConfigsResource,
    ) -> Result<AlterConfigsResourceResponse> {
        // APPEND (2) and SUBTRACT (3) act on list settings, which Tansu's engines do not
        // implement (they would stop the engine): refused, as Kafka refuses them on a
        // setting that is not a list.
        let list_operation = resource
            .configs
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|config| matches!(config.config_operation, 2 | 3));
        if list_operation {
            return Ok(AlterConfigsResourceResponse::default()
                .error_code(ErrorCode::InvalidConfig.into())
                .error_message(Some(
                    "APPEND and SUBTRACT are not supported: use SET or DELETE".into(),
                ))
                .resource_type(resource.resource_type)
                .resource_name(resource.resource_name));
        }
        if ConfigResource::from(resource.resource_type) != ConfigResource::Topic {
            return self.inner.incremental_alter_resource(resource).await;
        }
        let name = resource.resource_name.clone();
        let mut configs = self.topic_configs(&name).await?;
        for change in resource.configs.as_deref().unwrap_or_default() {
            configs.retain(|(known, _)| *known != change.name);
            if change.config_operation == 0 {
                configs.push((change.name.clone(), change.value.clone()));
            }
        }
        let settings = match Settings::parse(
            configs
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_deref())),
        ) {
            Ok(settings) => settings,
            Err(invalid) => {
                return Ok(AlterConfigsResourceResponse::default()
                    .error_code(ErrorCode::InvalidConfig.into())
                    .error_message(Some(invalid.to_string()))
                    .resource_type(resource.resource_type)
                    .resource_name(resource.resource_name));
            }
        };
        let response = self.inner.incremental_alter_resource(resource).await?;
        if response.error_code == i16::from(ErrorCode::None) {
            self.log.configure(&name, settings);
        }
        Ok(response)
    }

    async fn delete_records(
        &self,
        topics: &[DeleteRecordsTopic],
    ) -> Result<Vec<DeleteRecordsTopicResult>> {
        let mut results = Vec::with_capacity(topics.len());
        for topic in topics {
            let mut partitions = Vec::new();
            for partition in topic.partitions.as_deref().unwrap_or_default() {
                let topition = Topition::new(topic.name.clone(), partition.partition_index);
                let outcome = match self.check_partition(&topition).await {
                    Ok(()) => self
                        .log
                        .with_partition(&topition, |p| p.delete_before(partition.offset))
                        .and_then(|r| r),
                    Err(_) => Err(ErrorCode::UnknownTopicOrPartition),
                };
                partitions.push(match outcome {
                    Ok(low_watermark) => DeleteRecordsPartitionResult::default()
                        .partition_index(partition.partition_index)
                        .low_watermark(low_watermark)
                        .error_code(ErrorCode::None.into()),
                    Err(code) => DeleteRecordsPartitionResult::default()
                        .partition_index(partition.partition_index)
                        .low_watermark(-1)
                        .error_code(code.into()),
                });
            }
            results.push(
                DeleteRecordsTopicResult::default()
                    .name(topic.name.clone())
                    .partitions(Some(partitions)),
            );
        }
        Ok(results)
    }

    async fn delete_topic(&self, topic: &TopicId) -> Result<ErrorCode> {
        let name = match topic {
            TopicId::Name(name) => Some(name.clone()),
            TopicId::Id(_) => {
                let metadata = self
                    .inner
                    .metadata(Some(std::slice::from_ref(topic)))
                    .await?;
                metadata.topics().first().and_then(|t| t.name.clone())
            }
        };
        let code = self.inner.delete_topic(topic).await?;
        if let Some(name) = name
            && code == ErrorCode::None
        {
            self.log.delete_topic(&name);
            self.forget_topics(&name);
        }
        Ok(code)
    }

    async fn brokers(&self) -> Result<Vec<DescribeClusterBroker>> {
        self.inner.brokers().await
    }

    async fn produce(
        &self,
        transaction_id: Option<&str>,
        topition: &Topition,
        batch: deflated::Batch,
    ) -> Result<i64> {
        self.check_partition(topition).await?;
        self.admit_batch(transaction_id, topition, &batch)?;
        self.log.produce(topition, batch).map_err(Error::Api)
    }

    async fn fetch(
        &self,
        topition: &'_ Topition,
        offset: i64,
        _min_bytes: u32,
        max_bytes: u32,
        isolation: IsolationLevel,
    ) -> Result<Vec<deflated::Batch>> {
        self.check_partition(topition).await?;
        self.log
            .with_partition(topition, |p| {
                p.read(offset, max_bytes as usize, isolation)
                    .map(|slice| slice.batches)
            })
            .and_then(|read| read)
            .map_err(Error::Api)
    }

    async fn offset_stage(&self, topition: &Topition) -> Result<OffsetStage> {
        self.check_partition(topition).await?;
        self.offset_stage_of(topition)
    }

    async fn list_offsets(
        &self,
        isolation_level: IsolationLevel,
        offsets: &[(Topition, ListOffset)],
    ) -> Result<Vec<(Topition, ListOffsetResponse)>> {
        let mut responses = Vec::with_capacity(offsets.len());
        for (topition, request) in offsets {
            if self.check_partition(topition).await.is_err() {
                responses.push((
                    topition.clone(),
                    ListOffsetResponse {
                        error_code: ErrorCode::UnknownTopicOrPartition,
                        timestamp: None,
                        offset: None,
                    },
                ));
                continue;
            }
            let answer = self
                .log
                .with_partition(topition, |p| match request {
                    ListOffset::Earliest => (Some(p.log_start()), None),
                    ListOffset::Latest => (
                        Some(match isolation_level {
                            IsolationLevel::ReadCommitted => p.last_stable(),
                            IsolationLevel::ReadUncommitted => p.high_watermark(),
                        }),
                        None,
                    ),
                    ListOffset::Timestamp(at) => {
                        let millis = at
                            .duration_since(SystemTime::UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis() as i64);
                        match p.offset_for_timestamp(millis).unwrap_or_default() {
                            Some((offset, ts)) => (
                                Some(offset),
                                Some(
                                    SystemTime::UNIX_EPOCH
                                        + Duration::from_millis(ts.max(0) as u64),
                                ),
                            ),
                            None => (Some(-1), None),
                        }
                    }
                })
                .map_err(Error::Api)?;
            responses.push((
                topition.clone(),
                ListOffsetResponse {
                    error_code: ErrorCode::None,
                    timestamp: answer.1,
                    offset: answer.0,
                },
            ));
        }
        Ok(responses)
    }

    async fn offset_commit(
        &self,
        group_id: &str,
        retention_time_ms: Option<Duration>,
        offsets: &[(Topition, OffsetCommitRequest)],
    ) -> Result<Vec<(Topition, ErrorCode)>> {
        self.inner
            .offset_commit(group_id, retention_time_ms, offsets)
            .await
    }

    async fn offset_fetch(
        &self,
        group_id: Option<&str>,
        topics: &[Topition],
        require_stable: Option<bool>,
    ) -> Result<BTreeMap<Topition, i64>> {
        if require_stable.unwrap_or(false)
            && group_id.is_some_and(|group| self.has_pending_offsets(group))
        {
            return Err(Error::Api(ErrorCode::UnstableOffsetCommit));
        }
        self.inner
            .offset_fetch(group_id, topics, require_stable)
            .await
    }

    async fn committed_offset_topitions(&self, group_id: &str) -> Result<BTreeMap<Topition, i64>> {
        self.inner.committed_offset_topitions(group_id).await
    }

    async fn metadata(&self, topics: Option<&[TopicId]>) -> Result<MetadataResponse> {
        self.inner.metadata(topics).await
    }

    async fn upsert_user_scram_credential(
        &self,
        user: &str,
        mechanism: ScramMechanism,
        credential: ScramCredential,
    ) -> Result<()> {
        self.inner
            .upsert_user_scram_credential(user, mechanism, credential)
            .await
    }

    async fn delete_user_scram_credential(
        &self,
        user: &str,
        mechanism: ScramMechanism,
    ) -> Result<()> {
        self.inner
            .delete_user_scram_credential(user, mechanism)
            .await
    }

    async fn user_scram_credential(
        &self,
        user: &str,
        mechanism: ScramMechanism,
    ) -> Result<Option<ScramCredential>> {
        self.inner.user_scram_credential(user, mechanism).await
    }

    async fn describe_config(
        &self,
        name: &str,
        resource: ConfigResource,
        keys: Option<&[String]>,
    ) -> Result<DescribeConfigsResult> {
        let described = self.inner.describe_config(name, resource, keys).await?;
        if resource != ConfigResource::Topic {
            return Ok(described);
        }
        Ok(with_log_defaults(described, keys))
    }

    async fn list_groups(&self, states_filter: Option<&[String]>) -> Result<Vec<ListedGroup>> {
        self.inner.list_groups(states_filter).await
    }

    async fn delete_groups(
        &self,
        group_ids: Option<&[String]>,
    ) -> Result<Vec<DeletableGroupResult>> {
        self.inner.delete_groups(group_ids).await
    }

    async fn describe_groups(
        &self,
        group_ids: Option<&[String]>,
        include_authorized_operations: bool,
    ) -> Result<Vec<NamedGroupDetail>> {
        self.inner
            .describe_groups(group_ids, include_authorized_operations)
            .await
    }

    async fn describe_topic_partitions(
        &self,
        topics: Option<&[TopicId]>,
        partition_limit: i32,
        cursor: Option<Topition>,
    ) -> Result<Vec<DescribeTopicPartitionsResponseTopic>> {
        self.inner
            .describe_topic_partitions(topics, partition_limit, cursor)
            .await
    }

    async fn update_group(
        &self,
        group_id: &str,
        detail: GroupDetail,
        version: Option<Version>,
    ) -> Result<Version, UpdateError<GroupDetail>> {
        self.inner.update_group(group_id, detail, version).await
    }

    async fn init_producer(
        &self,
        transaction_id: Option<&str>,
        transaction_timeout_ms: i32,
        producer_id: Option<i64>,
        producer_epoch: Option<i16>,
    ) -> Result<ProducerIdResponse> {
        self.init_producer_id(
            transaction_id,
            transaction_timeout_ms,
            producer_id,
            producer_epoch,
        )
        .await
    }

    async fn txn_add_offsets(
        &self,
        transaction_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        group_id: &str,
    ) -> Result<ErrorCode> {
        self.add_offsets_to_txn(transaction_id, producer_id, producer_epoch, group_id)
            .await
    }

    async fn txn_add_partitions(
        &self,
        partitions: TxnAddPartitionsRequest,
    ) -> Result<TxnAddPartitionsResponse> {
        self.add_partitions_to_txn(partitions).await
    }

    async fn txn_offset_commit(
        &self,
        offsets: TxnOffsetCommitRequest,
    ) -> Result<Vec<TxnOffsetCommitResponseTopic>> {
        self.txn_offset_commit_checked(offsets).await
    }

    async fn txn_end(
        &self,
        transaction_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        committed: bool,
    ) -> Result<ErrorCode> {
        self.end_txn(transaction_id, producer_id, producer_epoch, committed)
            .await
    }

    async fn maintain(&self, now: SystemTime) -> Result<()> {
        self.abort_expired().await;
        self.inner.maintain(now).await
    }

    async fn cluster_id(&self) -> Result<String> {
        self.inner.cluster_id().await
    }

    async fn node(&self) -> Result<i32> {
        self.inner.node().await
    }

    async fn advertised_listener(&self) -> Result<Url> {
        self.inner.advertised_listener().await
    }

    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }
}
