//! Segment files. A partition is a directory of segments, `<base offset>.log`, each a run of
//! frames (a batch's length, then its bytes) covering the offsets from its base to the next
//! segment's base. Only a sparse index (a batch's offset and position every
//! [`INDEX_INTERVAL`] bytes) and a few figures per segment are held in memory; batches are
//! read from the file.
//!
//! A cleaned replacement for segments `[base, next)` is written as `<base>.cleaned`, then
//! renamed `<base>-<next>.swap` (the point of no return), the segments it replaces are
//! removed and the swap is renamed `<base>.log`. Opening a partition finishes a swap it
//! finds and removes a `.cleaned` file (the segments it would have replaced are intact).

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    time::SystemTime,
};

use bytes::{Bytes, BytesMut};
use tansu_sans_io::record::deflated;
use tracing::warn;

/// Bytes between two entries of a segment's sparse index.
pub(super) const INDEX_INTERVAL: u64 = 4096;
/// Bytes read from a segment file at a time.
const READ_CHUNK: usize = 256 * 1024;

pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One segment: its offset range, size, sparse index and times.
#[derive(Debug)]
pub(super) struct Segment {
    pub base: i64,
    /// One past the last offset the segment covers.
    pub next: i64,
    pub size: u64,
    pub path: PathBuf,
    /// `(base offset of a batch, its position)`: the first batch, then one per interval.
    index: Vec<(i64, u64)>,
    indexed_at: u64,
    /// The largest record timestamp in the segment (what retention and the compaction lag
    /// are measured against, as in Kafka).
    pub max_timestamp: i64,
    /// Wall-clock time of the segment's first write (for `segment.ms`).
    pub created: i64,
    /// Wall-clock time of the segment's last write (for `delete.retention.ms`).
    pub modified: i64,
    /// Open for appends while the segment is the active one.
    pub file: Option<File>,
}

pub(super) fn log_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

fn swap_path(dir: &Path, base: i64, next: i64) -> PathBuf {
    dir.join(format!("{base:020}-{next:020}.swap"))
}

/// A whole frame: a batch's length and its bytes, in one buffer (one write each, so a crash
/// leaves at most a cut-off last frame).
pub(super) fn frame(batch: &deflated::Batch) -> Vec<u8> {
    let encoded = Bytes::from(batch.clone());
    let mut framed = Vec::with_capacity(4 + encoded.len());
    framed.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    framed.extend_from_slice(&encoded);
    framed
}

impl Segment {
    /// A new, empty, active segment starting at `base`.
    pub fn create(dir: &Path, base: i64) -> io::Result<Self> {
        let path = log_path(dir, base);
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)?;
        let now = now_ms();
        Ok(Self {
            base,
            next: base,
            size: 0,
            path,
            index: Vec::new(),
            indexed_at: 0,
            max_timestamp: -1,
            created: now,
            modified: now,
            file: Some(file),
        })
    }

    /// Notes a batch written at the end of the segment at `position`.
    fn indexed(&mut self, batch: &deflated::Batch, position: u64, length: u64) {
        if self.index.is_empty() || position - self.indexed_at >= INDEX_INTERVAL {
            self.index.push((batch.base_offset, position));
            self.indexed_at = position;
        }
        self.size = position + length;
        self.next = batch.base_offset + i64::from(batch.last_offset_delta) + 1;
        self.max_timestamp = self.max_timestamp.max(batch.max_timestamp);
    }

    /// Appends a framed batch to this (active) segment.
    pub fn append(&mut self, batch: &deflated::Batch, framed: &[u8]) -> io::Result<()> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("append to a closed segment"))?;
        file.write_all(framed)?;
        let now = now_ms();
        if self.size == 0 {
            self.created = now;
        }
        self.modified = now;
        self.indexed(batch, self.size, framed.len() as u64);
        Ok(())
    }

    /// The batches from the one holding `offset` (or the first after it) to the end.
    pub fn batches_from(&self, offset: i64) -> io::Result<Batches> {
        let i = self.index.partition_point(|(at, _)| *at <= offset);
        let position = if i == 0 { 0 } else { self.index[i - 1].1 };
        let file = match &self.file {
            Some(file) => file.try_clone()?,
            None => File::open(&self.path)?,
        };
        Ok(Batches {
            file,
            position,
            end: self.size,
            buffer: Bytes::new(),
            buffered_at: position,
        })
    }

    /// Reads a segment file: its batches are passed to `visit` in order; a frame cut short at
    /// the end (a crash during a write) is cut off the file.
    pub fn restore(
        path: &Path,
        base: i64,
        mut visit: impl FnMut(&deflated::Batch),
    ) -> io::Result<Self> {
        let modified = fs::metadata(path)?
            .modified()
            .ok()
            .and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or_else(now_ms, |d| d.as_millis() as i64);
        let length = fs::metadata(path)?.len();
        let mut segment = Self {
            created: modified,
            modified,
            ..Self::view(path, base, length)
        };
        let mut batches = segment.batches_from(i64::MIN)?;
        let mut whole = 0;
        while let Some(read) = batches.next() {
            let (position, batch) = match read {
                Ok(read) => read,
                Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(error) => return Err(error),
            };
            let framed = batches.position - position;
            segment.indexed(&batch, position, framed);
            whole = position + framed;
            visit(&batch);
        }
        segment.size = whole;
        if length > whole {
            warn!(
                ?path,
                cut = length - whole,
                "A batch cut short at the end of the segment was removed."
            );
            OpenOptions::new().write(true).open(path)?.set_len(whole)?;
        }
        Ok(segment)
    }

    /// A closed segment file to read from its start (no index).
    pub fn view(path: &Path, base: i64, size: u64) -> Self {
        Self {
            base,
            next: base,
            size,
            path: path.to_path_buf(),
            index: Vec::new(),
            indexed_at: 0,
            max_timestamp: -1,
            created: 0,
            modified: 0,
            file: None,
        }
    }

    /// Reopens a restored segment for appends (it is the active one).
    pub fn reopen(&mut self) -> io::Result<()> {
        self.file = Some(
            OpenOptions::new()
                .read(true)
                .append(true)
                .open(&self.path)?,
        );
        Ok(())
    }
}

/// Bytes of a record batch's header, up to its records.
const BATCH_HEADER: usize = 61;

/// A batch as the log wrote it: its header read field by field, its records left as they
/// are. The checksum was checked when the producer's request was decoded; readers check it
/// again (as Kafka's consumers do), so the broker does not.
fn stored_batch(mut encoded: Bytes) -> io::Result<deflated::Batch> {
    use bytes::Buf as _;
    if encoded.len() < BATCH_HEADER {
        return Err(io::Error::other("a batch shorter than its header"));
    }
    Ok(deflated::Batch {
        base_offset: encoded.get_i64(),
        batch_length: encoded.get_i32(),
        partition_leader_epoch: encoded.get_i32(),
        magic: encoded.get_i8(),
        crc: encoded.get_u32(),
        attributes: encoded.get_i16(),
        last_offset_delta: encoded.get_i32(),
        base_timestamp: encoded.get_i64(),
        max_timestamp: encoded.get_i64(),
        producer_id: encoded.get_i64(),
        producer_epoch: encoded.get_i16(),
        base_sequence: encoded.get_i32(),
        record_count: encoded.get_u32(),
        record_data: encoded,
    })
}

/// Batches read from a segment file, each with the position of its frame.
pub(super) struct Batches {
    file: File,
    position: u64,
    end: u64,
    buffer: Bytes,
    buffered_at: u64,
}

impl Batches {
    /// Makes at least `needed` bytes from the current position available in the buffer.
    fn fill(&mut self, needed: usize) -> io::Result<()> {
        let offset = (self.position - self.buffered_at) as usize;
        if self.buffer.len() >= offset + needed {
            return Ok(());
        }
        let available = (self.end - self.position) as usize;
        if available < needed {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let size = needed.max(READ_CHUNK).min(available);
        let mut buffer = BytesMut::zeroed(size);
        self.file.read_exact_at(&mut buffer, self.position)?;
        self.buffer = buffer.freeze();
        self.buffered_at = self.position;
        Ok(())
    }
}

impl Iterator for Batches {
    type Item = io::Result<(u64, deflated::Batch)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.position >= self.end {
            return None;
        }
        let mut read = || -> io::Result<(u64, deflated::Batch)> {
            self.fill(4)?;
            let at = (self.position - self.buffered_at) as usize;
            let length = u32::from_be_bytes(
                self.buffer[at..at + 4]
                    .try_into()
                    .expect("four bytes of length"),
            ) as usize;
            self.fill(4 + length)?;
            let at = (self.position - self.buffered_at) as usize;
            let encoded = self.buffer.slice(at + 4..at + 4 + length);
            let batch = stored_batch(encoded)?;
            let position = self.position;
            self.position += 4 + length as u64;
            Ok((position, batch))
        };
        let result = read();
        if result.is_err() {
            self.position = self.end;
        }
        Some(result)
    }
}

/// A cleaned replacement being written for the segments from `base` up to `next`.
pub(super) struct Cleaned {
    dir: PathBuf,
    file: File,
    segment: Segment,
}

impl Cleaned {
    pub fn create(dir: &Path, base: i64, next: i64) -> io::Result<Self> {
        let path = dir.join(format!("{base:020}.cleaned"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            file,
            segment: Segment {
                base,
                next,
                size: 0,
                path,
                index: Vec::new(),
                indexed_at: 0,
                max_timestamp: -1,
                created: i64::MAX,
                modified: 0,
                file: None,
            },
        })
    }

    /// Writes a retained batch; `created` and `modified` are those of its source segment.
    pub fn write(
        &mut self,
        batch: &deflated::Batch,
        created: i64,
        modified: i64,
    ) -> io::Result<()> {
        let framed = frame(batch);
        self.file.write_all(&framed)?;
        let next = self.segment.next;
        self.segment
            .indexed(batch, self.segment.size, framed.len() as u64);
        self.segment.next = next;
        self.segment.created = self.segment.created.min(created);
        self.segment.modified = self.segment.modified.max(modified);
        Ok(())
    }

    /// Syncs the file and renames it to a swap: from here on it replaces its sources.
    pub fn seal(mut self, created: i64, modified: i64) -> io::Result<Segment> {
        self.file.sync_all()?;
        let swap = swap_path(&self.dir, self.segment.base, self.segment.next);
        fs::rename(&self.segment.path, &swap)?;
        self.segment.path = swap;
        if self.segment.created == i64::MAX {
            self.segment.created = created;
        }
        self.segment.modified = self.segment.modified.max(modified);
        Ok(self.segment)
    }

    /// Removes an unfinished replacement.
    pub fn discard(self) {
        _ = fs::remove_file(&self.segment.path);
    }
}

/// Replaces `sources` (segment files) by a sealed swap: removes them, then renames the swap
/// to its final name. The segment returned reads from there.
pub(super) fn install(dir: &Path, mut swap: Segment, sources: &[PathBuf]) -> io::Result<Segment> {
    for source in sources {
        match fs::remove_file(source) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
    }
    let path = log_path(dir, swap.base);
    fs::rename(&swap.path, &path)?;
    set_modified(&path, swap.modified);
    swap.path = path;
    Ok(swap)
}

/// Keeps a rewritten segment's last-write time that of its sources, so that a restart
/// measures `delete.retention.ms` from the same point.
fn set_modified(path: &Path, modified_ms: i64) {
    let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(modified_ms.max(0) as u64);
    if let Ok(file) = File::options().write(true).open(path) {
        _ = file.set_modified(at);
    }
}

/// The segment files of a partition directory, by base offset, after finishing or
/// discarding an interrupted cleaning.
pub(super) fn segment_files(dir: &Path) -> io::Result<Vec<(i64, PathBuf)>> {
    let mut logs = Vec::new();
    let mut swaps = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(base) = name
            .strip_suffix(".log")
            .and_then(|b| b.parse::<i64>().ok())
        {
            logs.push((base, path));
        } else if let Some((base, next)) = name
            .strip_suffix(".swap")
            .and_then(|range| range.split_once('-'))
            .and_then(|(b, n)| Some((b.parse::<i64>().ok()?, n.parse::<i64>().ok()?)))
        {
            swaps.push((base, next, path));
        } else if name.ends_with(".cleaned") {
            fs::remove_file(&path)?;
        }
    }
    for (base, next, swap) in swaps {
        let replaced: Vec<PathBuf> = logs
            .iter()
            .filter(|(at, _)| (base..next).contains(at))
            .map(|(_, path)| path.clone())
            .collect();
        logs.retain(|(at, _)| !(base..next).contains(at));
        for path in &replaced {
            fs::remove_file(path)?;
        }
        let path = log_path(dir, base);
        fs::rename(&swap, &path)?;
        logs.push((base, path));
    }
    logs.sort_by_key(|(base, _)| *base);
    Ok(logs)
}
