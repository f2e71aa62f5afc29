//! devbroker's partition log: the record data path, with Kafka's transaction semantics.
//!
//! Guarantee: a batch acknowledged to a producer is in the log (and, with a data directory,
//! in its segment file) before the acknowledgement; a read_committed reader never sees a
//! record at or beyond the partition's last stable offset (LSO) nor a record of an aborted
//! transaction. Relies on one lock per partition: appends, transaction markers and reads of
//! one partition are serialised, so the LSO a reader computes is always consistent with the
//! batches it returns.

mod batch;
mod partition;
mod segment;
#[cfg(test)]
mod tests;

use std::{
    collections::{HashMap, HashSet},
    fs::{self, OpenOptions},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
};

use tansu_sans_io::{ErrorCode, record::deflated};
use tansu_storage::Topition;
use tokio::sync::Notify;
use tracing::{debug, warn};

use batch::marker;
pub use batch::{is_control, is_transactional};
pub use partition::{AbortedTxn, Partition, Slice};
use segment::{restore_segment, segment_path, segment_topition};

/// Errors of the data path, each one a Kafka error code the client understands.
pub type LogResult<T> = Result<T, ErrorCode>;

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

    /// A log persisted under `dir`, restored from the segment files found there. A
    /// transaction left open by the previous run is aborted unless its producer is in
    /// `still_open` (the coordinator knows it as in progress: its client may still end it).
    pub fn open(dir: &Path, still_open: &HashSet<i64>) -> std::io::Result<Self> {
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
            for (producer_id, epoch) in partition.open_producers() {
                if still_open.contains(&producer_id) {
                    continue;
                }
                let batch = marker(producer_id, epoch, false)
                    .map_err(|code| std::io::Error::other(format!("{code:?}")))?;
                _ = partition.append(batch)?;
            }
            debug!(
                ?topition,
                high_watermark = partition.high_watermark(),
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
