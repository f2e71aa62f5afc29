//! One partition in memory: its batches, the transaction index that gives the last stable
//! offset and the aborted transactions, and each producer's recent sequences for
//! duplicate detection.

use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    io::Write,
};

use bytes::Bytes;
use tansu_sans_io::{
    ErrorCode, IsolationLevel,
    record::{deflated, inflated},
};
use tracing::warn;

use super::{
    LogResult,
    batch::{control_kind, is_control, is_transactional},
};

/// How many recent batches per producer and partition are remembered for duplicate
/// detection (Kafka keeps five, matching `max.in.flight.requests.per.connection`).
const DEDUPE_WINDOW: usize = 5;

/// A transaction that was aborted, as Kafka's aborted-transaction index records it:
/// the producer and the offsets from its first record to its abort marker.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
}

#[derive(Clone, Copy, Debug)]
struct SentBatch {
    first_sequence: i32,
    last_sequence: i32,
    base_offset: i64,
}

#[derive(Debug, Default)]
struct ProducerSequences {
    epoch: i16,
    recent: Vec<SentBatch>,
}

/// One partition: its batches, its transaction index and its producers' sequences.
#[derive(Debug, Default)]
pub struct Partition {
    pub(super) log_start: i64,
    high_watermark: i64,
    pub(super) batches: Vec<deflated::Batch>,
    /// Open transactions: producer id → first offset of the transaction in this partition.
    open: BTreeMap<i64, i64>,
    /// Aborted transactions by producer id.
    aborted: HashMap<i64, Vec<AbortedTxn>>,
    sequences: HashMap<i64, ProducerSequences>,
    pub(super) segment: Option<File>,
}

/// A consistent view of one partition for a fetch.
#[derive(Debug, Default)]
pub struct Slice {
    pub batches: Vec<deflated::Batch>,
    pub high_watermark: i64,
    pub last_stable: i64,
    pub log_start: i64,
}

impl Partition {
    /// The last stable offset: the first offset of the earliest open transaction, or the
    /// high watermark when none is open.
    pub fn last_stable(&self) -> i64 {
        self.open
            .values()
            .copied()
            .min()
            .unwrap_or(self.high_watermark)
            .min(self.high_watermark)
    }

    /// The producers with a transaction open in this partition, with their last epoch.
    pub(super) fn open_producers(&self) -> Vec<(i64, i16)> {
        self.open
            .keys()
            .map(|producer_id| {
                let epoch = self
                    .sequences
                    .get(producer_id)
                    .map_or(0, |state| state.epoch);
                (*producer_id, epoch)
            })
            .collect()
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    pub fn log_start(&self) -> i64 {
        self.log_start
    }

    fn is_aborted(&self, batch: &deflated::Batch) -> bool {
        self.aborted.get(&batch.producer_id).is_some_and(|txns| {
            txns.iter().any(|txn| {
                txn.first_offset <= batch.base_offset && batch.base_offset <= txn.last_offset
            })
        })
    }

    /// Checks a batch's producer sequence; `Ok(Some(offset))` is a duplicate already in the
    /// log at `offset`, `Ok(None)` a batch to append.
    pub(super) fn check_sequence(&mut self, batch: &deflated::Batch) -> LogResult<Option<i64>> {
        if batch.producer_id < 0 || batch.base_sequence < 0 {
            return Ok(None);
        }
        let last_sequence = batch.base_sequence.wrapping_add(batch.last_offset_delta);
        let Some(state) = self.sequences.get(&batch.producer_id) else {
            return if batch.base_sequence == 0 {
                Ok(None)
            } else {
                Err(ErrorCode::OutOfOrderSequenceNumber)
            };
        };
        if batch.producer_epoch < state.epoch {
            return Err(ErrorCode::InvalidProducerEpoch);
        }
        if batch.producer_epoch > state.epoch {
            return if batch.base_sequence == 0 {
                Ok(None)
            } else {
                Err(ErrorCode::OutOfOrderSequenceNumber)
            };
        }
        if let Some(sent) = state.recent.iter().find(|sent| {
            sent.first_sequence == batch.base_sequence && sent.last_sequence == last_sequence
        }) {
            return Ok(Some(sent.base_offset));
        }
        let expected = state
            .recent
            .last()
            .map_or(0, |sent| sent.last_sequence.wrapping_add(1));
        if batch.base_sequence == expected {
            Ok(None)
        } else if state
            .recent
            .iter()
            .any(|sent| sent.first_sequence <= batch.base_sequence)
            && batch.base_sequence < expected
        {
            Err(ErrorCode::DuplicateSequenceNumber)
        } else {
            Err(ErrorCode::OutOfOrderSequenceNumber)
        }
    }

    fn remember_sequence(&mut self, batch: &deflated::Batch) {
        if batch.producer_id < 0 || batch.base_sequence < 0 {
            return;
        }
        let state = self.sequences.entry(batch.producer_id).or_default();
        if state.epoch != batch.producer_epoch {
            state.epoch = batch.producer_epoch;
            state.recent.clear();
        }
        state.recent.push(SentBatch {
            first_sequence: batch.base_sequence,
            last_sequence: batch.base_sequence.wrapping_add(batch.last_offset_delta),
            base_offset: batch.base_offset,
        });
        if state.recent.len() > DEDUPE_WINDOW {
            _ = state.recent.remove(0);
        }
    }

    /// Appends a batch at the high watermark and updates the transaction index.
    pub(super) fn append(&mut self, mut batch: deflated::Batch) -> std::io::Result<i64> {
        let base_offset = self.high_watermark;
        batch.base_offset = base_offset;
        if let Some(segment) = self.segment.as_mut() {
            let encoded = Bytes::from(batch.clone());
            // Length and batch in one write: a crash leaves at most a cut-off last batch.
            let mut framed = Vec::with_capacity(4 + encoded.len());
            framed.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
            framed.extend_from_slice(&encoded);
            segment.write_all(&framed)?;
        }
        self.index(&batch);
        self.batches.push(batch);
        Ok(base_offset)
    }

    /// Updates offsets and the transaction index for a batch placed in the log.
    pub(super) fn index(&mut self, batch: &deflated::Batch) {
        self.high_watermark = batch.base_offset + i64::from(batch.last_offset_delta) + 1;
        if is_control(batch) {
            match control_kind(batch) {
                Some(committed) => self.close_txn(batch.producer_id, batch.base_offset, committed),
                None => warn!(
                    offset = batch.base_offset,
                    "Unreadable control batch ignored."
                ),
            }
        } else if is_transactional(batch) {
            _ = self
                .open
                .entry(batch.producer_id)
                .or_insert(batch.base_offset);
        }
        self.remember_sequence(batch);
    }

    fn close_txn(&mut self, producer_id: i64, marker_offset: i64, committed: bool) {
        if let Some(first_offset) = self.open.remove(&producer_id)
            && !committed
        {
            self.aborted
                .entry(producer_id)
                .or_default()
                .push(AbortedTxn {
                    producer_id,
                    first_offset,
                    last_offset: marker_offset,
                });
        }
    }

    /// Reads from `offset` under `isolation`, at most about `max_bytes` (always at least one
    /// batch when any is readable).
    pub fn read(&self, offset: i64, max_bytes: usize, isolation: IsolationLevel) -> Slice {
        let upper = match isolation {
            IsolationLevel::ReadCommitted => self.last_stable(),
            IsolationLevel::ReadUncommitted => self.high_watermark,
        };
        let start = self
            .batches
            .partition_point(|b| b.base_offset + i64::from(b.last_offset_delta) < offset);
        let mut bytes = 0;
        let mut batches = Vec::new();
        for batch in &self.batches[start..] {
            if batch.base_offset >= upper {
                break;
            }
            if isolation == IsolationLevel::ReadCommitted
                && !is_control(batch)
                && self.is_aborted(batch)
            {
                continue;
            }
            bytes += batch.record_data.len();
            batches.push(batch.clone());
            if bytes >= max_bytes {
                break;
            }
        }
        Slice {
            batches,
            high_watermark: self.high_watermark,
            last_stable: self.last_stable(),
            log_start: self.log_start,
        }
    }

    /// The first offset whose batch holds a record at or after `timestamp` (milliseconds).
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Option<(i64, i64)> {
        for batch in &self.batches {
            if batch.max_timestamp < timestamp || is_control(batch) {
                continue;
            }
            let Ok(inflated) = inflated::Batch::try_from(batch) else {
                return Some((batch.base_offset, batch.max_timestamp));
            };
            for record in &inflated.records {
                let at = inflated.base_timestamp + record.timestamp_delta;
                if at >= timestamp {
                    return Some((batch.base_offset + i64::from(record.offset_delta), at));
                }
            }
        }
        None
    }

    /// Drops whole batches below `offset` and moves the log start to it.
    pub fn delete_before(&mut self, offset: i64) -> LogResult<i64> {
        if offset > self.high_watermark {
            return Err(ErrorCode::OffsetOutOfRange);
        }
        let offset = if offset < 0 {
            self.high_watermark
        } else {
            offset
        };
        let keep = self
            .batches
            .partition_point(|b| b.base_offset + i64::from(b.last_offset_delta) < offset);
        _ = self.batches.drain(..keep);
        self.log_start = self.log_start.max(offset);
        Ok(self.log_start)
    }
}
