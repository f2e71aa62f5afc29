//! One partition: its segments on disk (a sparse index and a small cache of the latest
//! batches in memory), the transaction index that gives the last stable offset and the
//! aborted transactions, and each producer's recent sequences for duplicate detection.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    fs, io,
    path::{Path, PathBuf},
};

use tansu_sans_io::{
    ErrorCode, IsolationLevel,
    record::{deflated, inflated},
};
use tracing::warn;

use super::{
    LogResult,
    batch::{control_kind, is_control, is_transactional},
    segment::{Segment, frame, now_ms, segment_files},
    settings::Settings,
};

/// How many recent batches per producer and partition are remembered for duplicate
/// detection (Kafka keeps five, matching `max.in.flight.requests.per.connection`).
const DEDUPE_WINDOW: usize = 5;
/// Bytes of the latest batches each partition keeps in memory, so that readers keeping up
/// with the log are answered without reading its files.
const RECENT_BYTES: usize = 1024 * 1024;
/// The partition's offsets that outlive a restart, beside its segments.
const STATE_FILE: &str = "state";

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

/// One partition: its segments, its transaction index and its producers' sequences.
#[derive(Debug)]
pub struct Partition {
    pub(super) dir: PathBuf,
    pub(super) settings: Settings,
    pub(super) log_start: i64,
    high_watermark: i64,
    /// Never empty; the last one is the active segment, the only one appended to.
    pub(super) segments: Vec<Segment>,
    recent: VecDeque<deflated::Batch>,
    recent_bytes: usize,
    /// Open transactions: producer id → first offset of the transaction in this partition.
    open: BTreeMap<i64, i64>,
    /// Aborted transactions by producer id.
    pub(super) aborted: HashMap<i64, Vec<AbortedTxn>>,
    sequences: HashMap<i64, ProducerSequences>,
    /// Offsets below this one have been compacted (Kafka's cleaner checkpoint).
    pub(super) cleaned_to: i64,
    /// When a tombstone or marker the cleaner kept becomes removable.
    pub(super) pending_horizon: Option<i64>,
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

    /// Appends a batch at the high watermark (rolling the active segment first when it is
    /// full or old) and updates the transaction index.
    pub(super) fn append(&mut self, mut batch: deflated::Batch) -> io::Result<i64> {
        let base_offset = self.high_watermark;
        batch.base_offset = base_offset;
        let framed = frame(&batch);
        let active = self.active();
        if active.size > 0
            && (active.size + framed.len() as u64 > self.settings.segment_bytes
                || now_ms() - active.created >= self.settings.segment_ms)
        {
            self.roll()?;
        }
        self.active_mut().append(&batch, &framed)?;
        self.index(&batch);
        self.recent_bytes += batch.record_data.len();
        self.recent.push_back(batch);
        while self.recent_bytes > RECENT_BYTES && self.recent.len() > 1 {
            if let Some(old) = self.recent.pop_front() {
                self.recent_bytes -= old.record_data.len();
            }
        }
        Ok(base_offset)
    }

    pub(super) fn active(&self) -> &Segment {
        self.segments
            .last()
            .expect("a partition has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .last_mut()
            .expect("a partition has an active segment")
    }

    /// Closes the active segment and starts a new one at the high watermark.
    pub(super) fn roll(&mut self) -> io::Result<()> {
        let next = Segment::create(&self.dir, self.high_watermark)?;
        let active = self.active_mut();
        active.file = None;
        active.next = next.base;
        self.segments.push(next);
        Ok(())
    }

    /// Forgets cached batches below `offset` (they were cleaned or deleted).
    pub(super) fn forget_recent_below(&mut self, offset: i64) {
        while self.recent.front().is_some_and(|b| b.base_offset < offset) {
            if let Some(old) = self.recent.pop_front() {
                self.recent_bytes -= old.record_data.len();
            }
        }
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

    /// Forgets aborted transactions that ended below `offset`: none of their batches is
    /// left there.
    pub(super) fn forget_aborted_below(&mut self, offset: i64) {
        self.aborted.retain(|_, txns| {
            txns.retain(|txn| txn.last_offset >= offset);
            !txns.is_empty()
        });
    }

    /// Reads from `offset` under `isolation`, at most about `max_bytes` (always at least one
    /// batch when any is readable).
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        isolation: IsolationLevel,
    ) -> LogResult<Slice> {
        let upper = match isolation {
            IsolationLevel::ReadCommitted => self.last_stable(),
            IsolationLevel::ReadUncommitted => self.high_watermark,
        };
        let mut bytes = 0;
        let mut batches = Vec::new();
        // Whether to go on after this batch.
        let mut take = |batch: deflated::Batch| -> bool {
            if batch.base_offset >= upper {
                return false;
            }
            if batch.base_offset + i64::from(batch.last_offset_delta) < offset
                || (isolation == IsolationLevel::ReadCommitted
                    && !is_control(&batch)
                    && is_aborted(&self.aborted, &batch))
            {
                return true;
            }
            bytes += batch.record_data.len();
            batches.push(batch);
            bytes < max_bytes
        };
        if self.recent.front().is_some_and(|b| b.base_offset <= offset) {
            let start = self
                .recent
                .partition_point(|b| b.base_offset + i64::from(b.last_offset_delta) < offset);
            for batch in self.recent.range(start..) {
                if !take(batch.clone()) {
                    break;
                }
            }
        } else {
            let first = self.segments.partition_point(|s| s.next <= offset);
            'segments: for segment in &self.segments[first..] {
                for read in segment.batches_from(offset).map_err(storage_error)? {
                    let (_, batch) = read.map_err(storage_error)?;
                    if !take(batch) {
                        break 'segments;
                    }
                }
            }
        }
        Ok(Slice {
            batches,
            high_watermark: self.high_watermark,
            last_stable: self.last_stable(),
            log_start: self.log_start,
        })
    }

    /// The first offset whose batch holds a record at or after `timestamp` (milliseconds).
    pub fn offset_for_timestamp(&self, timestamp: i64) -> LogResult<Option<(i64, i64)>> {
        for segment in &self.segments {
            if segment.max_timestamp < timestamp {
                continue;
            }
            for read in segment
                .batches_from(self.log_start)
                .map_err(storage_error)?
            {
                let (_, batch) = read.map_err(storage_error)?;
                if batch.max_timestamp < timestamp
                    || is_control(&batch)
                    || batch.base_offset + i64::from(batch.last_offset_delta) < self.log_start
                {
                    continue;
                }
                let Ok(inflated) = inflated::Batch::try_from(&batch) else {
                    return Ok(Some((batch.base_offset, batch.max_timestamp)));
                };
                for record in &inflated.records {
                    let at = inflated.base_timestamp + record.timestamp_delta;
                    let offset = batch.base_offset + i64::from(record.offset_delta);
                    if at >= timestamp && offset >= self.log_start {
                        return Ok(Some((offset, at)));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Moves the log start to `offset` and removes the segments wholly below it.
    pub fn delete_before(&mut self, offset: i64) -> LogResult<i64> {
        if offset > self.high_watermark {
            return Err(ErrorCode::OffsetOutOfRange);
        }
        let offset = if offset < 0 {
            self.high_watermark
        } else {
            offset
        };
        self.advance_log_start(offset).map_err(storage_error)?;
        Ok(self.log_start)
    }

    /// Moves the log start forward to `offset` (never back), removes the segments wholly
    /// below it and records it.
    pub(super) fn advance_log_start(&mut self, offset: i64) -> io::Result<()> {
        if offset <= self.log_start {
            return Ok(());
        }
        self.log_start = offset;
        if self.active().next <= offset && self.active().size > 0 {
            self.roll()?;
        }
        while self.segments.len() > 1 && self.segments[0].next <= offset {
            let segment = self.segments.remove(0);
            fs::remove_file(&segment.path)?;
        }
        self.forget_recent_below(offset);
        self.forget_aborted_below(offset);
        self.save_state()
    }

    /// Records the log start and the cleaner's checkpoint beside the segments.
    pub(super) fn save_state(&self) -> io::Result<()> {
        let path = self.dir.join(STATE_FILE);
        let temporary = self.dir.join(format!("{STATE_FILE}.new"));
        fs::write(
            &temporary,
            format!("{} {}\n", self.log_start, self.cleaned_to),
        )?;
        fs::rename(temporary, path)
    }

    /// Opens a partition directory: restores its segments (a new partition gets an empty
    /// one at offset 0), its transaction index and its producers' sequences.
    pub(super) fn open(dir: &Path, settings: Settings) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let mut partition = Self {
            dir: dir.to_path_buf(),
            settings,
            log_start: 0,
            high_watermark: 0,
            segments: Vec::new(),
            recent: VecDeque::new(),
            recent_bytes: 0,
            open: BTreeMap::new(),
            aborted: HashMap::new(),
            sequences: HashMap::new(),
            cleaned_to: 0,
            pending_horizon: None,
        };
        for (base, path) in segment_files(dir)? {
            let mut indexed = Vec::new();
            let segment = Segment::restore(&path, base, |batch| indexed.push(batch.clone()))?;
            for batch in &indexed {
                partition.index(batch);
            }
            if let Some(previous) = partition.segments.last_mut() {
                previous.next = base;
            }
            partition.high_watermark = partition.high_watermark.max(segment.next);
            partition.segments.push(segment);
        }
        match partition.segments.last_mut() {
            Some(active) => active.reopen()?,
            None => partition.segments.push(Segment::create(dir, 0)?),
        }
        let first = partition.segments[0].base;
        let (log_start, cleaned_to) = fs::read_to_string(dir.join(STATE_FILE))
            .ok()
            .and_then(|state| {
                let (start, cleaned) = state.trim().split_once(' ')?;
                Some((start.parse().ok()?, cleaned.parse().ok()?))
            })
            .unwrap_or((first, first));
        partition.log_start = log_start;
        partition.cleaned_to = cleaned_to;
        Ok(partition)
    }
}

/// Whether a batch belongs to one of these aborted transactions.
pub(super) fn is_aborted(aborted: &HashMap<i64, Vec<AbortedTxn>>, batch: &deflated::Batch) -> bool {
    aborted.get(&batch.producer_id).is_some_and(|txns| {
        txns.iter().any(|txn| {
            txn.first_offset <= batch.base_offset && batch.base_offset <= txn.last_offset
        })
    })
}

pub(super) fn storage_error(error: io::Error) -> ErrorCode {
    warn!(%error, "Cannot read or write a segment.");
    ErrorCode::KafkaStorageError
}
