//! devbroker's partition log: the record data path, with Kafka's transaction semantics.
//!
//! Guarantee: a batch acknowledged to a producer is in the log (and, with a data directory,
//! in its segment file) before the acknowledgement; a read_committed reader never sees a
//! record at or beyond the partition's last stable offset (LSO) nor a record of an aborted
//! transaction. Relies on one lock per partition: appends, transaction markers and reads of
//! one partition are serialised, so the LSO a reader computes is always consistent with the
//! batches it returns.

mod batch;
mod clean;
mod partition;
mod segment;
pub mod settings;
#[cfg(test)]
mod tests;

use std::{
    collections::{HashMap, HashSet},
    fs,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
};

use tansu_sans_io::{ErrorCode, record::deflated};
use tansu_storage::Topition;
use tokio::sync::Notify;
use tracing::{debug, warn};

use batch::marker;
pub use batch::{is_control, is_transactional};
pub use clean::Cleaning;
pub use partition::{AbortedTxn, Partition, Slice};
use segment::log_path;
pub use settings::Settings;

/// Errors of the data path, each one a Kafka error code the client understands.
pub type LogResult<T> = Result<T, ErrorCode>;

/// Every partition's log: a directory of segments per partition, under the data directory
/// (durable) or under a scratch directory removed when the broker stops (in memory: the
/// records do not outlive the process, but they do not fill its memory either).
#[derive(Debug)]
pub struct Log {
    partitions: RwLock<HashMap<Topition, Arc<Mutex<Partition>>>>,
    dir: PathBuf,
    scratch: bool,
    settings: RwLock<HashMap<String, Settings>>,
    appended: Notify,
}

impl Drop for Log {
    fn drop(&mut self) {
        if self.scratch {
            _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// The directory of a partition's segments.
fn partition_dir(dir: &Path, topition: &Topition) -> PathBuf {
    dir.join(format!("{}-{}", topition.topic(), topition.partition()))
}

fn dir_topition(path: &Path) -> Option<Topition> {
    let name = path.file_name()?.to_str()?;
    let (topic, partition) = name.rsplit_once('-')?;
    Some(Topition::new(topic, partition.parse().ok()?))
}

/// Removes the scratch directories of devbrokers that are no longer running.
fn remove_stale_scratch(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(pid) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("devbroker-scratch-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            _ = fs::remove_dir_all(&path);
        }
    }
}

impl Log {
    /// A log that does not outlive the process, in a scratch directory.
    pub fn in_memory() -> Self {
        let root = std::env::temp_dir();
        remove_stale_scratch(&root);
        let dir = root.join(format!(
            "devbroker-scratch-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        Self {
            partitions: RwLock::default(),
            dir,
            scratch: true,
            settings: RwLock::default(),
            appended: Notify::new(),
        }
    }

    /// A log persisted under `dir`, restored from the partitions found there. A
    /// transaction left open by the previous run is aborted unless its producer is in
    /// `still_open` (the coordinator knows it as in progress: its client may still end it).
    /// Partitions take their topic's settings when [`Log::configure`] names them.
    pub fn open(dir: &Path, still_open: &HashSet<i64>) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        let log = Self {
            partitions: RwLock::default(),
            dir: dir.to_path_buf(),
            scratch: false,
            settings: RwLock::default(),
            appended: Notify::new(),
        };
        migrate_single_segments(dir)?;
        let mut restored = Vec::new();
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if !path.is_dir() {
                continue;
            }
            let Some(topition) = dir_topition(&path) else {
                continue;
            };
            let partition = Partition::open(&path, Settings::default())?;
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

    /// Sets a topic's log settings (for its partitions now and to come).
    pub fn configure(&self, topic: &str, settings: Settings) {
        _ = self
            .settings
            .write()
            .expect("settings lock")
            .insert(topic.to_owned(), settings);
        let partitions: Vec<_> = self
            .partitions
            .read()
            .expect("partition map lock")
            .iter()
            .filter(|(topition, _)| topition.topic() == topic)
            .map(|(_, partition)| partition.clone())
            .collect();
        for partition in partitions {
            partition.lock().expect("partition lock").settings = settings;
        }
    }

    /// A topic's log settings.
    pub fn settings(&self, topic: &str) -> Settings {
        self.settings
            .read()
            .expect("settings lock")
            .get(topic)
            .copied()
            .unwrap_or_default()
    }

    /// One pass of the cleaner over every partition at `now` (milliseconds since the
    /// epoch): idle segments rolled, expired segments removed, closed segments compacted.
    pub fn clean(&self, now: i64) -> Cleaning {
        let partitions: Vec<_> = self
            .partitions
            .read()
            .expect("partition map lock")
            .iter()
            .map(|(topition, partition)| (topition.clone(), partition.clone()))
            .collect();
        let mut total = Cleaning::default();
        for (topition, partition) in partitions {
            match clean::clean(&partition, now) {
                Ok(done) => total.add(done),
                Err(error) => warn!(%error, ?topition, "Cannot clean a partition."),
            }
        }
        total
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
        let settings = self.settings(topition.topic());
        let mut partitions = self.partitions.write().expect("partition map lock");
        if let Some(partition) = partitions.get(topition) {
            return Ok(partition.clone());
        }
        let partition = Arc::new(Mutex::new(Partition::open(
            &partition_dir(&self.dir, topition),
            settings,
        )?));
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
            if partition.settings.compact && has_keyless_record(&batch) {
                return Err(ErrorCode::InvalidRecord);
            }
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

    /// Forgets a deleted topic's partitions and removes their segments.
    pub fn delete_topic(&self, topic: &str) {
        let mut partitions = self.partitions.write().expect("partition map lock");
        partitions.retain(|topition, _| {
            let keep = topition.topic() != topic;
            if !keep {
                _ = fs::remove_dir_all(partition_dir(&self.dir, topition));
            }
            keep
        });
        _ = self.settings.write().expect("settings lock").remove(topic);
    }
}

/// Whether a batch holds a record without a key (which a compacted topic refuses, as Kafka
/// does: compaction keeps records by key).
fn has_keyless_record(batch: &deflated::Batch) -> bool {
    /// Record-batch attribute bits naming the compression codec.
    const COMPRESSION_BITS: i16 = 0x07;
    if is_control(batch) {
        return false;
    }
    if batch.attributes & COMPRESSION_BITS == 0 {
        return uncompressed_keys(&batch.record_data, batch.record_count)
            .is_none_or(|keyed| !keyed);
    }
    tansu_sans_io::record::inflated::Batch::try_from(batch).map_or(true, |inflated| {
        inflated.records.iter().any(|r| r.key.is_none())
    })
}

/// Whether every one of `count` uncompressed records has a key, read from each record's
/// length and key length alone; `None` when the records cannot be read.
fn uncompressed_keys(data: &[u8], count: u32) -> Option<bool> {
    /// A zigzag varint at `at`; returns it and the position after it.
    fn varint(data: &[u8], mut at: usize) -> Option<(i64, usize)> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = *data.get(at)?;
            at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some((((value >> 1) as i64) ^ -((value & 1) as i64), at));
            }
        }
        None
    }
    let mut at = 0;
    for _ in 0..count {
        let (length, body) = varint(data, at)?;
        // attributes (one byte), timestamp delta, offset delta, then the key's length.
        let (_, after_timestamp) = varint(data, body + 1)?;
        let (_, after_offset) = varint(data, after_timestamp)?;
        let (key_length, _) = varint(data, after_offset)?;
        if key_length < 0 {
            return Some(false);
        }
        at = body.checked_add(usize::try_from(length).ok()?)?;
    }
    Some(true)
}

/// Moves the single segment file per partition of earlier versions
/// (`<topic>-<partition>.segment`) into a partition directory as its first segment.
fn migrate_single_segments(dir: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".segment"))
        else {
            continue;
        };
        let target = dir.join(stem);
        fs::create_dir_all(&target)?;
        fs::rename(&path, log_path(&target, 0))?;
    }
    Ok(())
}
