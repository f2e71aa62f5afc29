//! Log cleaning with Kafka's semantics: segments roll after `segment.ms`, whole segments
//! expire by `retention.ms` and `retention.bytes` (`cleanup.policy=delete`), and closed
//! segments are compacted to the latest record per key (`cleanup.policy=compact`).
//!
//! Compaction rewrites the closed segments below the first uncleanable offset — the active
//! segment's base, the last stable offset, or the first segment younger than
//! `min.compaction.lag.ms`, whichever comes first — once the share of bytes written since
//! the last cleaning reaches `min.cleanable.dirty.ratio`. Offsets keep their gaps: a kept
//! record keeps its offset, a batch keeps its offset range. Aborted transactions' batches
//! are removed; a tombstone, and a transaction marker whose transaction has no record left,
//! are removed once their segment has not been written for `delete.retention.ms`.
//!
//! The rewrite runs without the partition's lock (closed segments do not change); only
//! planning and installing the result take it, so producers and readers wait for neither.

use std::{
    collections::HashMap,
    io,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use tansu_sans_io::record::{deflated, inflated};
use tracing::{debug, warn};

use super::{
    batch::{is_control, is_transactional},
    partition::{AbortedTxn, Partition, is_aborted},
    segment::{Cleaned, Segment, install},
    settings::Settings,
};

/// What one pass of the cleaner did to a partition.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct Cleaning {
    /// Segments removed by retention.
    pub expired_segments: usize,
    /// Segments rewritten by compaction.
    pub compacted_segments: usize,
    pub records_before: u64,
    pub records_after: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

impl Cleaning {
    pub fn add(&mut self, other: Self) {
        self.expired_segments += other.expired_segments;
        self.compacted_segments += other.compacted_segments;
        self.records_before += other.records_before;
        self.records_after += other.records_after;
        self.bytes_before += other.bytes_before;
        self.bytes_after += other.bytes_after;
    }
}

/// A closed segment to be compacted, as the plan saw it.
#[derive(Clone, Debug)]
struct Source {
    base: i64,
    next: i64,
    path: PathBuf,
    size: u64,
    created: i64,
    modified: i64,
}

/// The compaction a partition is due for, taken under its lock.
struct Plan {
    dir: PathBuf,
    settings: Settings,
    log_start: i64,
    /// Consecutive sources rewritten into one segment each (at most `segment.bytes`).
    groups: Vec<Vec<Source>>,
    aborted: HashMap<i64, Vec<AbortedTxn>>,
    /// The first offset not cleaned.
    end: i64,
}

/// One pass over a partition at `now` (milliseconds): roll, expire, compact.
pub(super) fn clean(partition: &Arc<Mutex<Partition>>, now: i64) -> io::Result<Cleaning> {
    let mut done = Cleaning::default();
    let plan = {
        let mut guard = partition.lock().expect("partition lock");
        roll_idle(&mut guard, now)?;
        if guard.settings.delete {
            done.expired_segments = expire(&mut guard, now)?;
        }
        if guard.settings.compact {
            plan(&guard, now)
        } else {
            None
        }
    };
    let Some(plan) = plan else {
        return Ok(done);
    };
    let (sealed, horizon, counts) = match rewrite(&plan, now) {
        Ok(rewritten) => rewritten,
        Err(error) => {
            warn!(%error, dir = ?plan.dir, "Compaction failed; the segments are unchanged.");
            return Err(error);
        }
    };
    let mut guard = partition.lock().expect("partition lock");
    let planned: Vec<i64> = plan.groups.iter().flatten().map(|s| s.base).collect();
    let current: Vec<i64> = guard
        .segments
        .iter()
        .take(planned.len())
        .map(|s| s.base)
        .collect();
    if planned != current {
        // Records were deleted meanwhile (DeleteRecords): start over next pass.
        for (segment, _) in sealed {
            _ = std::fs::remove_file(&segment.path);
        }
        return Ok(done);
    }
    let mut installed = Vec::with_capacity(sealed.len());
    for (segment, sources) in sealed {
        installed.push(install(&plan.dir, segment, &sources)?);
    }
    let replaced = planned.len();
    _ = guard.segments.splice(..replaced, installed);
    guard.cleaned_to = plan.end;
    guard.pending_horizon = horizon;
    guard.forget_recent_below(plan.end);
    guard.forget_aborted_below(plan.end);
    guard.save_state()?;
    done.compacted_segments = replaced;
    done.records_before = counts.0;
    done.records_after = counts.1;
    done.bytes_before = counts.2;
    done.bytes_after = counts.3;
    debug!(dir = ?plan.dir, ?done, "Compacted.");
    Ok(done)
}

/// Rolls an active segment older than `segment.ms` that holds records, so that a topic
/// nobody writes to any more still gets cleaned. (Kafka waits for the next append.)
fn roll_idle(partition: &mut Partition, now: i64) -> io::Result<()> {
    let active = partition.active();
    if active.size > 0 && now - active.created >= partition.settings.segment_ms {
        partition.roll()?;
    }
    Ok(())
}

/// Removes closed segments past `retention.ms` (by their largest record timestamp) or
/// beyond `retention.bytes`, oldest first; the log start moves with them.
fn expire(partition: &mut Partition, now: i64) -> io::Result<usize> {
    let settings = partition.settings;
    let mut total: u64 = partition.segments.iter().map(|s| s.size).sum();
    let mut expired = 0;
    let mut start = partition.log_start;
    for segment in &partition.segments[..partition.segments.len() - 1] {
        let newest = if segment.max_timestamp >= 0 {
            segment.max_timestamp
        } else {
            segment.modified
        };
        let by_time = settings.retention_ms >= 0 && now - newest > settings.retention_ms;
        let by_size = settings.retention_bytes >= 0
            && total.saturating_sub(segment.size) >= settings.retention_bytes as u64;
        if !(by_time || by_size) {
            break;
        }
        total -= segment.size;
        expired += 1;
        start = start.max(segment.next);
    }
    if expired > 0 {
        partition.advance_log_start(start)?;
    }
    Ok(expired)
}

/// The closed segments due for compaction, if the dirty ratio (or a tombstone whose
/// horizon passed) calls for it.
fn plan(partition: &Partition, now: i64) -> Option<Plan> {
    let settings = partition.settings;
    let end = partition.active().base.min(partition.last_stable());
    let mut sources = Vec::new();
    for segment in &partition.segments[..partition.segments.len() - 1] {
        let newest = if segment.max_timestamp >= 0 {
            segment.max_timestamp
        } else {
            segment.modified
        };
        if segment.next > end || now - newest < settings.min_compaction_lag_ms {
            break;
        }
        sources.push(segment);
    }
    let end = sources.last()?.next;
    let total: u64 = sources.iter().map(|s| s.size).sum();
    let dirty: u64 = sources
        .iter()
        .filter(|s| s.next > partition.cleaned_to)
        .map(|s| s.size)
        .sum();
    let ratio_reached =
        dirty > 0 && total > 0 && dirty as f64 / total as f64 >= settings.min_cleanable_dirty_ratio;
    let horizon_passed = partition.pending_horizon.is_some_and(|at| now >= at);
    if !(ratio_reached || horizon_passed) {
        return None;
    }
    let mut groups: Vec<Vec<Source>> = Vec::new();
    let mut group_size = 0;
    for segment in sources {
        let source = Source {
            base: segment.base,
            next: segment.next,
            path: segment.path.clone(),
            size: segment.size,
            created: segment.created,
            modified: segment.modified,
        };
        match groups.last_mut() {
            Some(group) if group_size + segment.size <= settings.segment_bytes => {
                group_size += segment.size;
                group.push(source);
            }
            _ => {
                group_size = segment.size;
                groups.push(vec![source]);
            }
        }
    }
    Some(Plan {
        dir: partition.dir.clone(),
        settings,
        log_start: partition.log_start,
        groups,
        aborted: partition.aborted.clone(),
        end,
    })
}

/// Every batch of a source segment, in order.
fn source_batches(
    source: &Source,
) -> io::Result<impl Iterator<Item = io::Result<deflated::Batch>>> {
    let segment = Segment::view(&source.path, source.base, source.size);
    Ok(segment
        .batches_from(i64::MIN)?
        .map(|read| read.map(|(_, batch)| batch)))
}

fn inflate(batch: &deflated::Batch) -> io::Result<inflated::Batch> {
    inflated::Batch::try_from(batch)
        .map_err(|error| io::Error::other(format!("unreadable batch: {error:?}")))
}

type Rewritten = (
    Vec<(Segment, Vec<PathBuf>)>,
    Option<i64>,
    (u64, u64, u64, u64),
);

/// Writes the compacted replacement of each group; returns the sealed swaps with the files
/// they replace, when the next tombstone becomes removable, and the record and byte counts
/// before and after.
fn rewrite(plan: &Plan, now: i64) -> io::Result<Rewritten> {
    // The latest offset of every key in the cleaned range.
    let mut latest: HashMap<Bytes, i64> = HashMap::new();
    for source in plan.groups.iter().flatten() {
        for batch in source_batches(source)? {
            let batch = batch?;
            if is_control(&batch) || is_aborted(&plan.aborted, &batch) {
                continue;
            }
            for record in inflate(&batch)?.records {
                if let Some(key) = record.key {
                    _ = latest.insert(
                        Bytes::copy_from_slice(&key),
                        batch.base_offset + i64::from(record.offset_delta),
                    );
                }
            }
        }
    }
    let mut sealed: Vec<(Segment, Vec<PathBuf>)> = Vec::new();
    let mut horizon: Option<i64> = None;
    let (mut records_before, mut records_after, mut bytes_before, mut bytes_after) = (0, 0, 0, 0);
    // Producers whose current transaction kept a record in the rewrite.
    let mut kept_in_txn: HashMap<i64, bool> = HashMap::new();
    for group in &plan.groups {
        let first = &group[0];
        let last = &group[group.len() - 1];
        let mut cleaned = Cleaned::create(&plan.dir, first.base, last.next)?;
        let written = (|| -> io::Result<()> {
            for source in group {
                bytes_before += source.size;
                let removable_at = source.modified + plan.settings.delete_retention_ms;
                let removable = now >= removable_at;
                for batch in source_batches(source)? {
                    let batch = batch?;
                    let count = u64::from(batch.record_count);
                    records_before += count;
                    if batch.base_offset + i64::from(batch.last_offset_delta) < plan.log_start {
                        continue;
                    }
                    if is_control(&batch) {
                        let kept = kept_in_txn.remove(&batch.producer_id).unwrap_or(false);
                        if kept || !removable {
                            if !kept {
                                horizon =
                                    Some(horizon.map_or(removable_at, |h| h.min(removable_at)));
                            }
                            records_after += count;
                            cleaned.write(&batch, source.created, source.modified)?;
                        }
                        continue;
                    }
                    if is_aborted(&plan.aborted, &batch) {
                        continue;
                    }
                    let mut inflated = inflate(&batch)?;
                    let all = inflated.records.len();
                    inflated.records.retain(|record| {
                        let Some(key) = &record.key else {
                            return true;
                        };
                        let offset = batch.base_offset + i64::from(record.offset_delta);
                        if latest.get(key) != Some(&offset) {
                            return false;
                        }
                        if record.value.is_none() {
                            if removable {
                                return false;
                            }
                            horizon = Some(horizon.map_or(removable_at, |h| h.min(removable_at)));
                        }
                        true
                    });
                    let kept = inflated.records.len();
                    if kept == 0 {
                        continue;
                    }
                    if is_transactional(&batch) {
                        _ = kept_in_txn.insert(batch.producer_id, true);
                    }
                    records_after += kept as u64;
                    if kept == all {
                        cleaned.write(&batch, source.created, source.modified)?;
                    } else {
                        let rebuilt = deflated::Batch::try_from(inflated).map_err(|error| {
                            io::Error::other(format!("cannot re-encode a batch: {error:?}"))
                        })?;
                        cleaned.write(&rebuilt, source.created, source.modified)?;
                    }
                }
            }
            Ok(())
        })();
        if let Err(error) = written {
            cleaned.discard();
            for (segment, _) in sealed {
                _ = std::fs::remove_file(&segment.path);
            }
            return Err(error);
        }
        let segment = cleaned.seal(first.created, last.modified)?;
        bytes_after += segment.size;
        sealed.push((segment, group.iter().map(|s| s.path.clone()).collect()));
    }
    Ok((
        sealed,
        horizon,
        (records_before, records_after, bytes_before, bytes_after),
    ))
}
