//! devbroker's partition log: the record data path, with Kafka's transaction semantics.
//!
//! Guarantee: a batch acknowledged to a producer is in the log (and, with a data directory,
//! in its segment file) before the acknowledgement; a read_committed reader never sees a
//! record at or beyond the partition's last stable offset (LSO) nor a record of an aborted
//! transaction. Relies on one lock per partition: appends, transaction markers and reads of
//! one partition are serialised, so the LSO a reader computes is always consistent with the
//! batches it returns.

use std::{
    collections::{BTreeMap, HashMap},
    fs::{self, File, OpenOptions},
    io::{BufReader, Read, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::SystemTime,
};

use bytes::Bytes;
use tansu_sans_io::{
    BatchAttribute, ControlBatch, EndTransactionMarker, ErrorCode, IsolationLevel,
    record::{Record, deflated, inflated},
};
use tansu_storage::Topition;
use tokio::sync::Notify;
use tracing::{debug, warn};

/// How many recent batches per producer and partition are remembered for duplicate
/// detection (Kafka keeps five, matching `max.in.flight.requests.per.connection`).
const DEDUPE_WINDOW: usize = 5;

/// Errors of the data path, each one a Kafka error code the client understands.
pub type LogResult<T> = Result<T, ErrorCode>;

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
    log_start: i64,
    high_watermark: i64,
    batches: Vec<deflated::Batch>,
    /// Open transactions: producer id → first offset of the transaction in this partition.
    open: BTreeMap<i64, i64>,
    /// Aborted transactions by producer id.
    aborted: HashMap<i64, Vec<AbortedTxn>>,
    sequences: HashMap<i64, ProducerSequences>,
    segment: Option<File>,
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
    fn check_sequence(&mut self, batch: &deflated::Batch) -> LogResult<Option<i64>> {
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
    fn append(&mut self, mut batch: deflated::Batch) -> std::io::Result<i64> {
        let base_offset = self.high_watermark;
        batch.base_offset = base_offset;
        if let Some(segment) = self.segment.as_mut() {
            let encoded = Bytes::from(batch.clone());
            segment.write_all(&(encoded.len() as u32).to_be_bytes())?;
            segment.write_all(&encoded)?;
        }
        self.index(&batch);
        self.batches.push(batch);
        Ok(base_offset)
    }

    /// Updates offsets and the transaction index for a batch placed in the log.
    fn index(&mut self, batch: &deflated::Batch) {
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

/// Record-batch attribute bit: the batch belongs to a transaction.
const TRANSACTIONAL_BIT: i16 = 0x10;
/// Record-batch attribute bit: the batch is a control batch (a transaction marker).
const CONTROL_BIT: i16 = 0x20;

/// Whether a batch was written inside a transaction.
pub fn is_transactional(batch: &deflated::Batch) -> bool {
    batch.attributes & TRANSACTIONAL_BIT != 0
}

/// Whether a batch is a control batch (a transaction marker).
pub fn is_control(batch: &deflated::Batch) -> bool {
    batch.attributes & CONTROL_BIT != 0
}

/// `Some(true)` for a commit marker, `Some(false)` for an abort marker.
fn control_kind(batch: &deflated::Batch) -> Option<bool> {
    let inflated = inflated::Batch::try_from(batch).ok()?;
    let key = inflated.records.first()?.key.clone()?;
    let control = ControlBatch::try_from(key).ok()?;
    Some(control.is_commit())
}

fn marker(producer_id: i64, producer_epoch: i16, committed: bool) -> LogResult<deflated::Batch> {
    let encode = || -> Result<deflated::Batch, tansu_sans_io::Error> {
        let control = if committed {
            ControlBatch::default().commit()
        } else {
            ControlBatch::default().abort()
        };
        let key: Bytes = control.try_into()?;
        let value: Bytes = EndTransactionMarker::default().try_into()?;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        inflated::Batch::builder()
            .record(Record::builder().key(key.into()).value(value.into()))
            .attributes(
                BatchAttribute::default()
                    .control(true)
                    .transaction(true)
                    .into(),
            )
            .producer_id(producer_id)
            .producer_epoch(producer_epoch)
            .base_sequence(-1)
            .base_timestamp(now)
            .max_timestamp(now)
            .build()
            .and_then(TryInto::try_into)
    };
    encode().map_err(|error| {
        warn!(%error, "Cannot encode a transaction marker.");
        ErrorCode::UnknownServerError
    })
}

/// Every partition's log, optionally persisted to one segment file per partition.
#[derive(Debug, Default)]
pub struct Log {
    partitions: RwLock<HashMap<Topition, Arc<Mutex<Partition>>>>,
    data_dir: Option<PathBuf>,
    appended: Notify,
}

impl Log {
    /// A log held in memory only.
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// A log persisted under `dir`, restored from the segment files found there. Transactions
    /// left open by the previous run are aborted (their producers must initialise again).
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        let log = Self {
            data_dir: Some(dir.to_path_buf()),
            ..Self::default()
        };
        let mut restored = Vec::new();
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            let Some(topition) = segment_topition(&path) else {
                continue;
            };
            let partition = restore_segment(&path)?;
            restored.push((topition, partition));
        }
        for (topition, mut partition) in restored {
            let open: Vec<i64> = partition.open.keys().copied().collect();
            for producer_id in open {
                let epoch = partition
                    .sequences
                    .get(&producer_id)
                    .map_or(0, |state| state.epoch);
                let batch = marker(producer_id, epoch, false)
                    .map_err(|code| std::io::Error::other(format!("{code:?}")))?;
                _ = partition.append(batch)?;
            }
            debug!(
                ?topition,
                high_watermark = partition.high_watermark,
                "Restored."
            );
            _ = log
                .partitions
                .write()
                .expect("partition map lock")
                .insert(topition, Arc::new(Mutex::new(partition)));
        }
        Ok(log)
    }

    fn partition(&self, topition: &Topition) -> std::io::Result<Arc<Mutex<Partition>>> {
        if let Some(partition) = self
            .partitions
            .read()
            .expect("partition map lock")
            .get(topition)
        {
            return Ok(partition.clone());
        }
        let mut partitions = self.partitions.write().expect("partition map lock");
        if let Some(partition) = partitions.get(topition) {
            return Ok(partition.clone());
        }
        let mut partition = Partition::default();
        if let Some(dir) = &self.data_dir {
            partition.segment = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(segment_path(dir, topition))?,
            );
        }
        let partition = Arc::new(Mutex::new(partition));
        _ = partitions.insert(topition.clone(), partition.clone());
        Ok(partition)
    }

    /// Runs `f` on a partition (created empty when new), under its lock.
    pub fn with_partition<T>(
        &self,
        topition: &Topition,
        f: impl FnOnce(&mut Partition) -> T,
    ) -> LogResult<T> {
        let partition = self.partition(topition).map_err(|error| {
            warn!(%error, ?topition, "Cannot open a partition segment.");
            ErrorCode::KafkaStorageError
        })?;
        let mut guard = partition.lock().expect("partition lock");
        Ok(f(&mut guard))
    }

    /// Appends a producer's batch; returns its base offset (the original one for a duplicate).
    pub fn produce(&self, topition: &Topition, batch: deflated::Batch) -> LogResult<i64> {
        let offset = self.with_partition(topition, |partition| {
            if let Some(offset) = partition.check_sequence(&batch)? {
                return Ok(offset);
            }
            partition.append(batch).map_err(|error| {
                warn!(%error, ?topition, "Cannot append to a segment.");
                ErrorCode::KafkaStorageError
            })
        })??;
        self.appended.notify_waiters();
        Ok(offset)
    }

    /// Writes a commit or abort marker for a producer's transaction in a partition.
    pub fn end_txn(
        &self,
        topition: &Topition,
        producer_id: i64,
        producer_epoch: i16,
        committed: bool,
    ) -> LogResult<i64> {
        let batch = marker(producer_id, producer_epoch, committed)?;
        let offset = self.with_partition(topition, |partition| {
            partition.append(batch).map_err(|error| {
                warn!(%error, ?topition, "Cannot append a marker to a segment.");
                ErrorCode::KafkaStorageError
            })
        })??;
        self.appended.notify_waiters();
        Ok(offset)
    }

    /// Resolves when a batch is appended anywhere. Register before checking for data.
    pub fn appended(&self) -> tokio::sync::futures::Notified<'_> {
        self.appended.notified()
    }

    /// Forgets a deleted topic's partitions and removes their segment files.
    pub fn delete_topic(&self, topic: &str) {
        let mut partitions = self.partitions.write().expect("partition map lock");
        partitions.retain(|topition, _| {
            let keep = topition.topic() != topic;
            if !keep && let Some(dir) = &self.data_dir {
                _ = fs::remove_file(segment_path(dir, topition));
            }
            keep
        });
    }
}

fn segment_path(dir: &Path, topition: &Topition) -> PathBuf {
    dir.join(format!(
        "{}-{}.segment",
        topition.topic(),
        topition.partition()
    ))
}

fn segment_topition(path: &Path) -> Option<Topition> {
    let name = path.file_name()?.to_str()?.strip_suffix(".segment")?;
    let (topic, partition) = name.rsplit_once('-')?;
    Some(Topition::new(topic, partition.parse().ok()?))
}

fn restore_segment(path: &Path) -> std::io::Result<Partition> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut partition = Partition::default();
    let mut length = [0u8; 4];
    loop {
        match reader.read_exact(&mut length) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(error) => return Err(error),
        }
        let mut encoded = vec![0u8; u32::from_be_bytes(length) as usize];
        if reader.read_exact(&mut encoded).is_err() {
            warn!(?path, "Truncated batch at the end of a segment ignored.");
            break;
        }
        let batch = deflated::Batch::try_from(Bytes::from(encoded))
            .map_err(|error| std::io::Error::other(format!("{path:?}: {error:?}")))?;
        partition.index(&batch);
        partition.batches.push(batch);
    }
    partition.log_start = partition.batches.first().map_or(0, |b| b.base_offset);
    partition.segment = Some(OpenOptions::new().append(true).open(path)?);
    Ok(partition)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(
        producer_id: i64,
        epoch: i16,
        sequence: i32,
        records: i32,
        txn: bool,
    ) -> deflated::Batch {
        let mut builder = inflated::Batch::builder()
            .attributes(BatchAttribute::default().transaction(txn).into())
            .producer_id(producer_id)
            .producer_epoch(epoch)
            .base_sequence(sequence);
        for i in 0..records {
            builder = builder.record(
                Record::builder()
                    .offset_delta(i)
                    .value(Bytes::from(format!("v{i}")).into()),
            );
        }
        builder
            .last_offset_delta(records - 1)
            .build()
            .and_then(TryInto::try_into)
            .expect("batch")
    }

    fn tp() -> Topition {
        Topition::new("t", 0)
    }

    fn offsets(read: &Slice) -> Vec<i64> {
        read.batches.iter().map(|b| b.base_offset).collect()
    }

    #[test]
    fn open_transaction_holds_back_the_last_stable_offset() {
        let log = Log::in_memory();
        assert_eq!(log.produce(&tp(), batch(-1, -1, -1, 2, false)), Ok(0));
        assert_eq!(log.produce(&tp(), batch(7, 0, 0, 3, true)), Ok(2));
        assert_eq!(log.produce(&tp(), batch(-1, -1, -1, 1, false)), Ok(5));
        let read = log
            .with_partition(&tp(), |p| p.read(0, 1 << 20, IsolationLevel::ReadCommitted))
            .unwrap();
        assert_eq!((read.last_stable, read.high_watermark), (2, 6));
        assert_eq!(offsets(&read), vec![0]);
        assert_eq!(log.end_txn(&tp(), 7, 0, true), Ok(6));
        let read = log
            .with_partition(&tp(), |p| p.read(0, 1 << 20, IsolationLevel::ReadCommitted))
            .unwrap();
        assert_eq!((read.last_stable, read.high_watermark), (7, 7));
        assert_eq!(offsets(&read), vec![0, 2, 5, 6]);
    }

    #[test]
    fn aborted_batches_are_left_out_of_read_committed_only() {
        let log = Log::in_memory();
        _ = log.produce(&tp(), batch(7, 0, 0, 3, true)).unwrap();
        _ = log.produce(&tp(), batch(8, 0, 0, 1, true)).unwrap();
        _ = log.end_txn(&tp(), 7, 0, false).unwrap();
        _ = log.end_txn(&tp(), 8, 0, true).unwrap();
        let committed = log
            .with_partition(&tp(), |p| p.read(0, 1 << 20, IsolationLevel::ReadCommitted))
            .unwrap();
        assert_eq!(offsets(&committed), vec![3, 4, 5]);
        let uncommitted = log
            .with_partition(&tp(), |p| {
                p.read(0, 1 << 20, IsolationLevel::ReadUncommitted)
            })
            .unwrap();
        assert_eq!(offsets(&uncommitted), vec![0, 3, 4, 5]);
    }

    #[test]
    fn a_read_from_inside_a_batch_returns_that_batch() {
        let log = Log::in_memory();
        _ = log.produce(&tp(), batch(-1, -1, -1, 10, false)).unwrap();
        let read = log
            .with_partition(&tp(), |p| {
                p.read(4, 1 << 20, IsolationLevel::ReadUncommitted)
            })
            .unwrap();
        assert_eq!(offsets(&read), vec![0]);
    }

    #[test]
    fn a_retried_batch_is_not_appended_twice() {
        let log = Log::in_memory();
        assert_eq!(log.produce(&tp(), batch(3, 0, 0, 2, false)), Ok(0));
        assert_eq!(log.produce(&tp(), batch(3, 0, 2, 2, false)), Ok(2));
        assert_eq!(log.produce(&tp(), batch(3, 0, 2, 2, false)), Ok(2));
        assert_eq!(
            log.produce(&tp(), batch(3, 0, 9, 1, false)),
            Err(ErrorCode::OutOfOrderSequenceNumber)
        );
        let hw = log.with_partition(&tp(), |p| p.high_watermark()).unwrap();
        assert_eq!(hw, 4);
    }

    #[test]
    fn a_restored_segment_aborts_what_was_left_open() {
        let dir = std::env::temp_dir().join(format!("devbroker-log-{}", uuid::Uuid::new_v4()));
        {
            let log = Log::open(&dir).unwrap();
            _ = log.produce(&tp(), batch(1, 0, 0, 2, true)).unwrap();
            _ = log.end_txn(&tp(), 1, 0, true).unwrap();
            _ = log.produce(&tp(), batch(2, 0, 0, 2, true)).unwrap();
        }
        let log = Log::open(&dir).unwrap();
        let read = log
            .with_partition(&tp(), |p| p.read(0, 1 << 20, IsolationLevel::ReadCommitted))
            .unwrap();
        assert_eq!(offsets(&read), vec![0, 2, 5]);
        assert_eq!((read.last_stable, read.high_watermark), (6, 6));
        fs::remove_dir_all(dir).unwrap();
    }
}
