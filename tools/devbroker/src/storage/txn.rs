//! The transaction coordinator devbroker adds to Tansu's engine: it tracks every
//! transaction in progress, fences producers that lost their transactional id, writes
//! commit and abort markers into the log on EndTxn, and aborts transactions that were
//! abandoned (a new InitProducerId for the same transactional id, or
//! `transaction.timeout.ms` passed).

use std::collections::HashMap;

use tansu_sans_io::{
    ErrorCode,
    add_partitions_to_txn_request::AddPartitionsToTxnTopic,
    add_partitions_to_txn_response::{
        AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
    },
    record::deflated,
    txn_offset_commit_response::{TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic},
};
use tansu_storage::{
    Error, ProducerIdResponse, Result, Storage, Topition, TxnAddPartitionsRequest,
    TxnAddPartitionsResponse, TxnOffsetCommitRequest,
};
use tracing::{debug, info, warn};

use super::{
    DevStorage,
    coordinator::{Change, Coordinator},
};
use crate::log::is_transactional;

impl DevStorage {
    /// The coordinator's state (a panic elsewhere while it was held does not make it
    /// unusable: every change is applied whole).
    pub(super) fn coordinator(&self) -> std::sync::MutexGuard<'_, Coordinator> {
        self.coordinator
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records that a transaction is in progress (once), then `then`: a partition or a
    /// group added to it.
    fn note_txn(
        &self,
        transaction_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        then: Option<Change>,
    ) -> Result<()> {
        let mut coordinator = self.coordinator();
        if !coordinator.ongoing.contains_key(transaction_id) {
            coordinator
                .record(Change::Begin {
                    transaction_id: transaction_id.to_owned(),
                    producer_id,
                    epoch: producer_epoch,
                })
                .map_err(Error::Api)?;
        }
        let Some(change) = then else {
            return Ok(());
        };
        let known = coordinator
            .ongoing
            .get(transaction_id)
            .is_some_and(|txn| match &change {
                Change::Partition {
                    topic, partition, ..
                } => txn
                    .partitions
                    .contains(&Topition::new(topic.clone(), *partition)),
                Change::Group { group, .. } => txn.groups.contains(group),
                _ => false,
            });
        if known {
            return Ok(());
        }
        coordinator.record(change).map_err(Error::Api)
    }

    /// Aborts a transaction the client will not finish: writes abort markers, discards its
    /// pending offsets in the engine and fences the producer epoch that ran it.
    async fn abort_abandoned(&self, transaction_id: &str, reason: &str) {
        let Some(txn) = self.coordinator().ongoing.remove(transaction_id) else {
            return;
        };
        // Removed above so that no other request ends it meanwhile; journalled below.
        info!(
            transaction_id,
            producer_id = txn.producer_id,
            producer_epoch = txn.producer_epoch,
            partitions = txn.partitions.len(),
            reason,
            "Aborting an abandoned transaction."
        );
        {
            let mut coordinator = self.coordinator();
            let fenced = coordinator.record(Change::Fenced {
                producer_id: txn.producer_id,
                epoch: txn.producer_epoch,
            });
            let ended = coordinator.record(Change::End {
                transaction_id: transaction_id.to_owned(),
            });
            if fenced.and(ended).is_err() {
                warn!(transaction_id, "The abort could not be journalled.");
            }
        }
        for topition in &txn.partitions {
            if let Err(code) =
                self.log
                    .end_txn(topition, txn.producer_id, txn.producer_epoch, false)
            {
                warn!(?code, ?topition, "Cannot write an abort marker.");
            }
        }
        match self
            .inner
            .txn_end(transaction_id, txn.producer_id, txn.producer_epoch, false)
            .await
        {
            Ok(code) => debug!(?code, "Engine transaction aborted."),
            Err(error) => debug!(?error, "Engine had no transaction to abort."),
        }
    }

    /// Aborts every transaction older than its timeout. Called periodically by the server.
    pub async fn abort_expired(&self) {
        let expired: Vec<String> = {
            let coordinator = self.coordinator();
            coordinator
                .ongoing
                .iter()
                .filter(|(id, txn)| txn.started.elapsed() > coordinator.timeout(id))
                .map(|(id, _)| id.clone())
                .collect()
        };
        for transaction_id in expired {
            self.abort_abandoned(&transaction_id, "transaction.timeout.ms expired")
                .await;
        }
    }

    /// Whether a group has transactional offsets waiting for their transaction to end.
    pub fn has_pending_offsets(&self, group_id: &str) -> bool {
        self.coordinator()
            .ongoing
            .values()
            .any(|txn| txn.groups.contains(group_id))
    }

    /// InitProducerId. A producer without an id gets a new one (a transactional id keeps
    /// its producer id with the next epoch); a producer that names its current id and
    /// epoch (KIP-360, after UNKNOWN_PRODUCER_ID or an abortable error) gets its next
    /// epoch, and one whose id or epoch is no longer current is fenced.
    pub(super) async fn init_producer_id(
        &self,
        transaction_id: Option<&str>,
        transaction_timeout_ms: i32,
        producer_id: Option<i64>,
        producer_epoch: Option<i16>,
    ) -> Result<ProducerIdResponse> {
        let known = producer_id.filter(|id| *id >= 0);
        if let Some(id) = known {
            let epoch = producer_epoch.unwrap_or(-1);
            let coordinator = self.coordinator();
            let current = match transaction_id {
                Some(transaction_id) => coordinator.holders.get(transaction_id).copied(),
                None => coordinator.epochs.get(&id).map(|epoch| (id, *epoch)),
            };
            if current.is_none_or(|(holder, current)| holder != id || current != epoch) {
                debug!(
                    transaction_id,
                    id,
                    epoch,
                    ?current,
                    "Stale producer fenced."
                );
                return Ok(ProducerIdResponse {
                    error: if transaction_id.is_some() {
                        ErrorCode::ProducerFenced
                    } else {
                        ErrorCode::InvalidProducerEpoch
                    },
                    id: -1,
                    epoch: -1,
                });
            }
        }
        if let Some(transaction_id) = transaction_id {
            self.abort_abandoned(transaction_id, "the transactional id was initialised again")
                .await;
        }
        // Tansu's engine is asked as for a new producer: for a transactional id it knows,
        // that is the same producer id with the next epoch.
        let response = self
            .inner
            .init_producer(transaction_id, transaction_timeout_ms, Some(-1), Some(-1))
            .await?;
        if response.error == ErrorCode::None {
            self.coordinator()
                .record(Change::Producer {
                    producer_id: response.id,
                    epoch: response.epoch,
                    transaction_id: transaction_id.map(str::to_owned),
                    timeout_ms: transaction_id.and(u64::try_from(transaction_timeout_ms).ok()),
                })
                .map_err(Error::Api)?;
            if let Some(id) = known.filter(|id| *id != response.id) {
                debug!(id, new = response.id, "Producer given a new id.");
            }
        }
        Ok(response)
    }

    pub(super) async fn add_offsets_to_txn(
        &self,
        transaction_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        group_id: &str,
    ) -> Result<ErrorCode> {
        if self.coordinator().is_fenced(producer_id, producer_epoch) {
            return Ok(ErrorCode::ProducerFenced);
        }
        let code = self
            .inner
            .txn_add_offsets(transaction_id, producer_id, producer_epoch, group_id)
            .await?;
        if code == ErrorCode::None {
            self.note_txn(
                transaction_id,
                producer_id,
                producer_epoch,
                Some(Change::Group {
                    transaction_id: transaction_id.to_owned(),
                    group: group_id.to_owned(),
                }),
            )?;
        }
        Ok(code)
    }

    pub(super) async fn add_partitions_to_txn(
        &self,
        partitions: TxnAddPartitionsRequest,
    ) -> Result<TxnAddPartitionsResponse> {
        let TxnAddPartitionsRequest::VersionZeroToThree {
            transaction_id,
            producer_id,
            producer_epoch,
            topics,
        } = &partitions
        else {
            // Version 4 and later are sent by brokers to a coordinator, never by clients.
            return Err(Error::Api(ErrorCode::UnsupportedVersion));
        };
        if self.coordinator().is_fenced(*producer_id, *producer_epoch) {
            // Answered per partition, as a Kafka broker does, so the client sees it.
            return Ok(answer(topics, |_, _| ErrorCode::ProducerFenced));
        }
        self.note_txn(transaction_id, *producer_id, *producer_epoch, None)?;
        match self.inner.txn_add_partitions(partitions.clone()).await {
            Err(error) if already_held(&error) => {}
            other => return other,
        }
        // A retry of a request that landed before its answer was lost (the broker killed
        // in between): the engine holds some of the partitions and refused the whole
        // request. Each is added on its own; one already held is added.
        debug!(
            transaction_id,
            "Partitions already in the transaction; added one by one."
        );
        let mut codes = HashMap::new();
        for topic in topics {
            for partition in topic.partitions.as_deref().unwrap_or_default() {
                let one = TxnAddPartitionsRequest::VersionZeroToThree {
                    transaction_id: transaction_id.clone(),
                    producer_id: *producer_id,
                    producer_epoch: *producer_epoch,
                    topics: vec![
                        AddPartitionsToTxnTopic::default()
                            .name(topic.name.clone())
                            .partitions(Some(vec![*partition])),
                    ],
                };
                let code = match self.inner.txn_add_partitions(one).await {
                    Ok(TxnAddPartitionsResponse::VersionZeroToThree(results)) => results
                        .iter()
                        .flat_map(|result| {
                            result.results_by_partition.as_deref().unwrap_or_default()
                        })
                        .map(|result| ErrorCode::try_from(result.partition_error_code))
                        .next()
                        .unwrap_or(Ok(ErrorCode::None))?,
                    Ok(other) => return Ok(other),
                    Err(error) if already_held(&error) => ErrorCode::None,
                    Err(error) => return Err(error),
                };
                _ = codes.insert((topic.name.as_str(), *partition), code);
            }
        }
        Ok(answer(topics, |topic, partition| {
            codes
                .get(&(topic, partition))
                .copied()
                .unwrap_or(ErrorCode::None)
        }))
    }

    pub(super) async fn txn_offset_commit_checked(
        &self,
        offsets: TxnOffsetCommitRequest,
    ) -> Result<Vec<TxnOffsetCommitResponseTopic>> {
        if self
            .coordinator()
            .is_fenced(offsets.producer_id, offsets.producer_epoch)
        {
            return Err(Error::Api(ErrorCode::ProducerFenced));
        }
        let topics = offsets.topics.clone();
        match self.inner.txn_offset_commit(offsets).await {
            // The engine takes a group's offsets once per transaction. A second commit
            // (or a retry of one whose answer was lost) cannot be told from a change of
            // offsets, so it is refused with an error the client answers by aborting;
            // the transaction done again commits them.
            Err(error) if already_held(&error) => {
                warn!("A group's offsets sent twice in one transaction; the client must abort.");
                Ok(topics
                    .into_iter()
                    .map(|topic| {
                        let partitions = topic
                            .partitions
                            .unwrap_or_default()
                            .into_iter()
                            .map(|partition| {
                                TxnOffsetCommitResponsePartition::default()
                                    .partition_index(partition.partition_index)
                                    .error_code(ErrorCode::UnknownServerError.into())
                            })
                            .collect();
                        TxnOffsetCommitResponseTopic::default()
                            .name(topic.name)
                            .partitions(Some(partitions))
                    })
                    .collect())
            }
            other => other,
        }
    }

    pub(super) async fn end_txn(
        &self,
        transaction_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        committed: bool,
    ) -> Result<ErrorCode> {
        if self.coordinator().is_fenced(producer_id, producer_epoch) {
            return Ok(ErrorCode::ProducerFenced);
        }
        let code = self
            .inner
            .txn_end(transaction_id, producer_id, producer_epoch, committed)
            .await?;
        if code != ErrorCode::None {
            return Ok(code);
        }
        let partitions = self
            .coordinator()
            .ongoing
            .get(transaction_id)
            .map(|txn| txn.partitions.clone())
            .unwrap_or_default();
        for topition in &partitions {
            _ = self
                .log
                .end_txn(topition, producer_id, producer_epoch, committed)
                .map_err(Error::Api)?;
        }
        // Ended in the journal only once every marker is written: a broker killed
        // in between still knows the transaction, and the client's retry ends it.
        self.coordinator()
            .record(Change::End {
                transaction_id: transaction_id.to_owned(),
            })
            .map_err(Error::Api)?;
        debug!(
            transaction_id,
            producer_id,
            producer_epoch,
            committed,
            partitions = partitions.len(),
            "Transaction ended."
        );
        Ok(ErrorCode::None)
    }

    /// Checks that a produced batch's producer id and epoch may write, and records the
    /// partition in its transaction.
    pub(super) fn admit_batch(
        &self,
        transaction_id: Option<&str>,
        topition: &Topition,
        batch: &deflated::Batch,
    ) -> Result<()> {
        let (producer_id, producer_epoch) = (batch.producer_id, batch.producer_epoch);
        if producer_id >= 0 {
            let coordinator = self.coordinator();
            if coordinator.fenced.contains(&(producer_id, producer_epoch))
                || coordinator.replaced.contains(&producer_id)
            {
                return Err(Error::Api(ErrorCode::ProducerFenced));
            }
            match coordinator.epochs.get(&producer_id) {
                None => return Err(Error::Api(ErrorCode::UnknownProducerId)),
                Some(current) if *current > producer_epoch => {
                    return Err(Error::Api(if transaction_id.is_some() {
                        ErrorCode::ProducerFenced
                    } else {
                        ErrorCode::InvalidProducerEpoch
                    }));
                }
                Some(_) => {}
            }
        }
        if let Some(transaction_id) = transaction_id.filter(|_| is_transactional(batch)) {
            self.note_txn(
                transaction_id,
                producer_id,
                producer_epoch,
                Some(Change::Partition {
                    transaction_id: transaction_id.to_owned(),
                    topic: topition.topic().to_owned(),
                    partition: topition.partition(),
                }),
            )?;
        }
        Ok(())
    }
}

/// Whether the engine refused a row it already holds (SQLite's SQLITE_CONSTRAINT_UNIQUE):
/// the request, or part of it, was done before.
fn already_held(error: &Error) -> bool {
    const SQLITE_CONSTRAINT_UNIQUE: i32 = 2067;
    matches!(
        error,
        Error::LibSql(error)
            if matches!(**error, libsql::Error::SqliteFailure(SQLITE_CONSTRAINT_UNIQUE, _))
    )
}

/// An AddPartitionsToTxn answer with each requested partition's code.
fn answer(
    topics: &[AddPartitionsToTxnTopic],
    code: impl Fn(&str, i32) -> ErrorCode,
) -> TxnAddPartitionsResponse {
    TxnAddPartitionsResponse::VersionZeroToThree(
        topics
            .iter()
            .map(|topic| {
                AddPartitionsToTxnTopicResult::default()
                    .name(topic.name.clone())
                    .results_by_partition(Some(
                        topic
                            .partitions
                            .as_deref()
                            .unwrap_or_default()
                            .iter()
                            .map(|partition| {
                                AddPartitionsToTxnPartitionResult::default()
                                    .partition_index(*partition)
                                    .partition_error_code(code(&topic.name, *partition).into())
                            })
                            .collect(),
                    ))
            })
            .collect(),
    )
}
