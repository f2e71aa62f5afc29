//! The transaction coordinator devbroker adds to Tansu's engine: it tracks every
//! transaction in progress, fences producers that lost their transactional id, writes
//! commit and abort markers into the log on EndTxn, and aborts transactions that were
//! abandoned (a new InitProducerId for the same transactional id, or
//! `transaction.timeout.ms` passed).

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    time::{Duration, Instant},
};

use tansu_sans_io::{
    ErrorCode,
    add_partitions_to_txn_response::{
        AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
    },
    record::deflated,
    txn_offset_commit_response::TxnOffsetCommitResponseTopic,
};
use tansu_storage::{
    Error, ProducerIdResponse, Result, Storage, Topition, TxnAddPartitionsRequest,
    TxnAddPartitionsResponse, TxnOffsetCommitRequest,
};
use tracing::{debug, info, warn};

use super::DevStorage;
use crate::log::is_transactional;

/// Transaction timeout used when a producer did not say (Kafka's default).
const DEFAULT_TXN_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct OngoingTxn {
    producer_id: i64,
    producer_epoch: i16,
    started: Instant,
    partitions: BTreeSet<Topition>,
    groups: BTreeSet<String>,
}

#[derive(Debug, Default)]
pub(super) struct Coordinator {
    /// Transactions in progress by transactional id.
    ongoing: HashMap<String, OngoingTxn>,
    /// The timeout each transactional id asked for in InitProducerId.
    timeouts: HashMap<String, Duration>,
    /// The current epoch of every producer id initialised on this broker.
    epochs: HashMap<i64, i16>,
    /// Producer epochs whose transaction the broker aborted: fenced from now on.
    fenced: HashSet<(i64, i16)>,
    /// The producer id and epoch that last initialised each transactional id.
    holders: HashMap<String, (i64, i16)>,
    /// Producer ids replaced by another for their transactional id: fenced entirely.
    replaced: HashSet<i64>,
}

impl Coordinator {
    /// Whether this producer id and epoch lost its transactional id to a newer producer.
    fn is_fenced(&self, producer_id: i64, producer_epoch: i16) -> bool {
        self.fenced.contains(&(producer_id, producer_epoch))
            || self.replaced.contains(&producer_id)
            || self
                .epochs
                .get(&producer_id)
                .is_some_and(|current| *current > producer_epoch)
    }
}

impl DevStorage {
    fn coordinator(&self) -> std::sync::MutexGuard<'_, Coordinator> {
        self.coordinator.lock().expect("coordinator lock")
    }

    fn note_txn(&self, transaction_id: &str, producer_id: i64, producer_epoch: i16) {
        _ = self
            .coordinator()
            .ongoing
            .entry(transaction_id.to_owned())
            .or_insert_with(|| OngoingTxn {
                producer_id,
                producer_epoch,
                started: Instant::now(),
                partitions: BTreeSet::new(),
                groups: BTreeSet::new(),
            });
    }

    /// Aborts a transaction the client will not finish: writes abort markers, discards its
    /// pending offsets in the engine and fences the producer epoch that ran it.
    async fn abort_abandoned(&self, transaction_id: &str, reason: &str) {
        let Some(txn) = self.coordinator().ongoing.remove(transaction_id) else {
            return;
        };
        info!(
            transaction_id,
            producer_id = txn.producer_id,
            producer_epoch = txn.producer_epoch,
            partitions = txn.partitions.len(),
            reason,
            "Aborting an abandoned transaction."
        );
        _ = self
            .coordinator()
            .fenced
            .insert((txn.producer_id, txn.producer_epoch));
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
                .filter(|(id, txn)| {
                    let timeout = coordinator
                        .timeouts
                        .get(*id)
                        .copied()
                        .unwrap_or(DEFAULT_TXN_TIMEOUT);
                    txn.started.elapsed() > timeout
                })
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

    pub(super) async fn init_producer_id(
        &self,
        transaction_id: Option<&str>,
        transaction_timeout_ms: i32,
        producer_id: Option<i64>,
        producer_epoch: Option<i16>,
    ) -> Result<ProducerIdResponse> {
        if let Some(transaction_id) = transaction_id {
            self.abort_abandoned(transaction_id, "the transactional id was initialised again")
                .await;
        }
        let response = self
            .inner
            .init_producer(
                transaction_id,
                transaction_timeout_ms,
                producer_id,
                producer_epoch,
            )
            .await?;
        if response.error == ErrorCode::None {
            let mut coordinator = self.coordinator();
            _ = coordinator.epochs.insert(response.id, response.epoch);
            if let Some(transaction_id) = transaction_id {
                let holder = (response.id, response.epoch);
                if let Some((previous, _)) = coordinator
                    .holders
                    .insert(transaction_id.to_owned(), holder)
                    .filter(|(previous, _)| *previous != response.id)
                {
                    _ = coordinator.replaced.insert(previous);
                }
                let timeout = u64::try_from(transaction_timeout_ms)
                    .ok()
                    .filter(|ms| *ms > 0)
                    .map_or(DEFAULT_TXN_TIMEOUT, Duration::from_millis);
                _ = coordinator
                    .timeouts
                    .insert(transaction_id.to_owned(), timeout);
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
            self.note_txn(transaction_id, producer_id, producer_epoch);
            if let Some(txn) = self.coordinator().ongoing.get_mut(transaction_id) {
                _ = txn.groups.insert(group_id.to_owned());
            }
        }
        Ok(code)
    }

    pub(super) async fn add_partitions_to_txn(
        &self,
        partitions: TxnAddPartitionsRequest,
    ) -> Result<TxnAddPartitionsResponse> {
        if let TxnAddPartitionsRequest::VersionZeroToThree {
            transaction_id,
            producer_id,
            producer_epoch,
            topics,
        } = &partitions
        {
            if self.coordinator().is_fenced(*producer_id, *producer_epoch) {
                // Answered per partition, as a Kafka broker does, so the client sees it.
                return Ok(TxnAddPartitionsResponse::VersionZeroToThree(
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
                                                .partition_error_code(
                                                    ErrorCode::ProducerFenced.into(),
                                                )
                                        })
                                        .collect(),
                                ))
                        })
                        .collect(),
                ));
            }
            self.note_txn(transaction_id, *producer_id, *producer_epoch);
        }
        self.inner.txn_add_partitions(partitions).await
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
        self.inner.txn_offset_commit(offsets).await
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
            .remove(transaction_id)
            .map(|txn| txn.partitions)
            .unwrap_or_default();
        for topition in &partitions {
            _ = self
                .log
                .end_txn(topition, producer_id, producer_epoch, committed)
                .map_err(Error::Api)?;
        }
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
            self.note_txn(transaction_id, producer_id, producer_epoch);
            if let Some(txn) = self.coordinator().ongoing.get_mut(transaction_id) {
                _ = txn.partitions.insert(topition.clone());
            }
        }
        Ok(())
    }
}
