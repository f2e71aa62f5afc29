use std::{collections::HashSet, fs};

use bytes::Bytes;
use tansu_sans_io::{
    BatchAttribute, ErrorCode, IsolationLevel,
    record::{Record, deflated, inflated},
};
use tansu_storage::Topition;

use super::{Log, Slice};

fn batch(producer_id: i64, epoch: i16, sequence: i32, records: i32, txn: bool) -> deflated::Batch {
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
        .unwrap()
        .unwrap();
    assert_eq!((read.last_stable, read.high_watermark), (2, 6));
    assert_eq!(offsets(&read), vec![0]);
    assert_eq!(log.end_txn(&tp(), 7, 0, true), Ok(6));
    let read = log
        .with_partition(&tp(), |p| p.read(0, 1 << 20, IsolationLevel::ReadCommitted))
        .unwrap()
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
        .unwrap()
        .unwrap();
    assert_eq!(offsets(&committed), vec![3, 4, 5]);
    let uncommitted = log
        .with_partition(&tp(), |p| {
            p.read(0, 1 << 20, IsolationLevel::ReadUncommitted)
        })
        .unwrap()
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
        .unwrap()
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
        let log = Log::open(&dir, &HashSet::new()).unwrap();
        _ = log.produce(&tp(), batch(1, 0, 0, 2, true)).unwrap();
        _ = log.end_txn(&tp(), 1, 0, true).unwrap();
        _ = log.produce(&tp(), batch(2, 0, 0, 2, true)).unwrap();
    }
    let log = Log::open(&dir, &HashSet::new()).unwrap();
    let read = log
        .with_partition(&tp(), |p| p.read(0, 1 << 20, IsolationLevel::ReadCommitted))
        .unwrap()
        .unwrap();
    assert_eq!(offsets(&read), vec![0, 2, 5]);
    assert_eq!((read.last_stable, read.high_watermark), (6, 6));
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_transaction_the_coordinator_still_knows_stays_open_across_a_restart() {
    let dir = std::env::temp_dir().join(format!("devbroker-log-{}", uuid::Uuid::new_v4()));
    {
        let log = Log::open(&dir, &HashSet::new()).unwrap();
        _ = log.produce(&tp(), batch(1, 0, 0, 2, true)).unwrap();
    }
    let log = Log::open(&dir, &HashSet::from([1])).unwrap();
    let (last_stable, high_watermark) = log
        .with_partition(&tp(), |p| (p.last_stable(), p.high_watermark()))
        .unwrap();
    assert_eq!((last_stable, high_watermark), (0, 2));
    // The client commits it after the restart: its records become readable.
    _ = log.end_txn(&tp(), 1, 0, true).unwrap();
    let read = log
        .with_partition(&tp(), |p| p.read(0, 1 << 20, IsolationLevel::ReadCommitted))
        .unwrap()
        .unwrap();
    assert_eq!(offsets(&read), vec![0, 2]);
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_batch_cut_short_by_a_crash_is_removed_and_appends_follow_the_last_whole_one() {
    let dir = std::env::temp_dir().join(format!("devbroker-log-{}", uuid::Uuid::new_v4()));
    {
        let log = Log::open(&dir, &HashSet::new()).unwrap();
        _ = log.produce(&tp(), batch(1, 0, 0, 2, false)).unwrap();
    }
    let segment = dir.join("t-0").join(format!("{:020}.log", 0));
    let whole = fs::metadata(&segment).unwrap().len();
    let mut file = fs::OpenOptions::new().append(true).open(&segment).unwrap();
    std::io::Write::write_all(&mut file, &[0, 0, 1, 0, 7, 7, 7]).unwrap();
    drop(file);
    {
        let log = Log::open(&dir, &HashSet::new()).unwrap();
        assert_eq!(fs::metadata(&segment).unwrap().len(), whole);
        assert_eq!(log.produce(&tp(), batch(1, 0, 2, 1, false)), Ok(2));
    }
    let log = Log::open(&dir, &HashSet::new()).unwrap();
    let read = log
        .with_partition(&tp(), |p| {
            p.read(0, 1 << 20, IsolationLevel::ReadUncommitted)
        })
        .unwrap()
        .unwrap();
    assert_eq!(offsets(&read), vec![0, 2]);
    fs::remove_dir_all(dir).unwrap();
}

/// A non-transactional batch of keyed records (`None` value: a tombstone).
fn keyed(records: &[(&str, Option<&str>)]) -> deflated::Batch {
    keyed_by(-1, -1, -1, false, records)
}

fn keyed_by(
    producer_id: i64,
    epoch: i16,
    sequence: i32,
    txn: bool,
    records: &[(&str, Option<&str>)],
) -> deflated::Batch {
    let mut builder = inflated::Batch::builder()
        .attributes(BatchAttribute::default().transaction(txn).into())
        .producer_id(producer_id)
        .producer_epoch(epoch)
        .base_sequence(sequence);
    for (i, (key, value)) in records.iter().enumerate() {
        builder = builder.record(
            Record::builder()
                .offset_delta(i as i32)
                .key(Bytes::from(key.to_string()).into())
                .value(value.map(|v| Bytes::from(v.to_string()))),
        );
    }
    builder
        .last_offset_delta(records.len() as i32 - 1)
        .build()
        .and_then(TryInto::try_into)
        .expect("batch")
}

/// Every record readable from offset 0: (offset, key, value).
fn records(log: &Log, isolation: IsolationLevel) -> Vec<(i64, String, Option<String>)> {
    let read = log
        .with_partition(&tp(), |p| p.read(0, 1 << 30, isolation))
        .unwrap()
        .unwrap();
    let mut out = Vec::new();
    for batch in &read.batches {
        if super::is_control(batch) {
            continue;
        }
        let inflated = inflated::Batch::try_from(batch).unwrap();
        for record in inflated.records {
            out.push((
                batch.base_offset + i64::from(record.offset_delta),
                String::from_utf8(record.key.unwrap().to_vec()).unwrap(),
                record.value.map(|v| String::from_utf8(v.to_vec()).unwrap()),
            ));
        }
    }
    out
}

fn compacting(segment_bytes: u64, delete_retention_ms: i64) -> super::Settings {
    super::Settings {
        compact: true,
        delete: false,
        segment_bytes,
        min_cleanable_dirty_ratio: 0.0,
        delete_retention_ms,
        ..super::Settings::default()
    }
}

fn now() -> i64 {
    super::segment::now_ms()
}

#[test]
fn compaction_keeps_the_latest_record_per_key_at_its_offset() {
    let log = Log::in_memory();
    // Small segments: every batch rolls a new one.
    log.configure("t", compacting(100, 86_400_000));
    _ = log
        .produce(&tp(), keyed(&[("a", Some("a1")), ("b", Some("b1"))]))
        .unwrap();
    _ = log.produce(&tp(), keyed(&[("a", Some("a2"))])).unwrap();
    _ = log
        .produce(&tp(), keyed(&[("c", Some("c1")), ("b", Some("b2"))]))
        .unwrap();
    _ = log.produce(&tp(), keyed(&[("a", Some("a3"))])).unwrap();
    // The last batch is in the active segment: never cleaned.
    _ = log.produce(&tp(), keyed(&[("b", Some("b3"))])).unwrap();
    let done = log.clean(now());
    assert!(done.compacted_segments > 0, "{done:?}");
    assert_eq!(
        records(&log, IsolationLevel::ReadUncommitted),
        vec![
            (3, "c".into(), Some("c1".into())),
            (4, "b".into(), Some("b2".into())),
            (5, "a".into(), Some("a3".into())),
            (6, "b".into(), Some("b3".into())),
        ]
    );
    let (start, high) = log
        .with_partition(&tp(), |p| (p.log_start(), p.high_watermark()))
        .unwrap();
    assert_eq!((start, high), (0, 7), "offsets keep their gaps");
    // A read from a cleaned offset starts at the next record left.
    let read = log
        .with_partition(&tp(), |p| {
            p.read(1, 1 << 20, IsolationLevel::ReadUncommitted)
        })
        .unwrap()
        .unwrap();
    assert_eq!(read.batches[0].base_offset, 3);
    // Nothing dirty is left: a second pass changes nothing.
    assert_eq!(log.clean(now()).compacted_segments, 0);
}

#[test]
fn a_tombstone_is_removed_only_after_delete_retention() {
    let log = Log::in_memory();
    log.configure("t", compacting(100, 60_000));
    _ = log.produce(&tp(), keyed(&[("a", Some("a1"))])).unwrap();
    _ = log.produce(&tp(), keyed(&[("a", None)])).unwrap();
    _ = log.produce(&tp(), keyed(&[("b", Some("b1"))])).unwrap();
    _ = log.clean(now());
    assert_eq!(
        records(&log, IsolationLevel::ReadUncommitted),
        vec![(1, "a".into(), None), (2, "b".into(), Some("b1".into()))]
    );
    // A minute later (as the cleaner sees it) the tombstone goes, with no new writes.
    _ = log.clean(now() + 61_000);
    assert_eq!(
        records(&log, IsolationLevel::ReadUncommitted),
        vec![(2, "b".into(), Some("b1".into()))]
    );
}

#[test]
fn an_aborted_transaction_is_removed_by_cleaning_and_a_committed_one_kept() {
    let log = Log::in_memory();
    log.configure("t", compacting(100, 0));
    _ = log
        .produce(&tp(), keyed_by(7, 0, 0, true, &[("a", Some("aborted"))]))
        .unwrap();
    _ = log.end_txn(&tp(), 7, 0, false).unwrap();
    _ = log
        .produce(&tp(), keyed_by(8, 0, 0, true, &[("b", Some("committed"))]))
        .unwrap();
    _ = log.end_txn(&tp(), 8, 0, true).unwrap();
    _ = log.produce(&tp(), keyed(&[("c", Some("last"))])).unwrap();
    _ = log.clean(now());
    let expected = vec![
        (2, "b".to_string(), Some("committed".to_string())),
        (4, "c".to_string(), Some("last".to_string())),
    ];
    assert_eq!(records(&log, IsolationLevel::ReadUncommitted), expected);
    assert_eq!(records(&log, IsolationLevel::ReadCommitted), expected);
    // The abort marker went with its records; the commit marker stays with its record.
    let batches = log
        .with_partition(&tp(), |p| {
            p.read(0, 1 << 20, IsolationLevel::ReadUncommitted)
        })
        .unwrap()
        .unwrap()
        .batches;
    assert_eq!(offsets_of(&batches), vec![2, 3, 4]);
}

fn offsets_of(batches: &[deflated::Batch]) -> Vec<i64> {
    batches.iter().map(|b| b.base_offset).collect()
}

#[test]
fn an_open_transaction_bounds_what_is_cleaned() {
    let log = Log::in_memory();
    log.configure("t", compacting(100, 0));
    _ = log.produce(&tp(), keyed(&[("a", Some("a1"))])).unwrap();
    _ = log
        .produce(&tp(), keyed_by(7, 0, 0, true, &[("a", Some("open"))]))
        .unwrap();
    _ = log.produce(&tp(), keyed(&[("a", Some("a2"))])).unwrap();
    _ = log.produce(&tp(), keyed(&[("b", Some("b1"))])).unwrap();
    _ = log.clean(now());
    // Nothing at or after the open transaction's first offset is cleaned; before it,
    // a1 is superseded by nothing cleanable, so it stays.
    assert_eq!(
        records(&log, IsolationLevel::ReadUncommitted)
            .iter()
            .map(|r| r.0)
            .collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    _ = log.end_txn(&tp(), 7, 0, false).unwrap();
    _ = log.produce(&tp(), keyed(&[("c", Some("c1"))])).unwrap();
    _ = log.clean(now());
    assert_eq!(
        records(&log, IsolationLevel::ReadUncommitted),
        vec![
            (2, "a".into(), Some("a2".into())),
            (3, "b".into(), Some("b1".into())),
            (5, "c".into(), Some("c1".into())),
        ]
    );
}

#[test]
fn retention_by_bytes_removes_the_oldest_segments_and_moves_the_log_start() {
    let log = Log::in_memory();
    log.configure(
        "t",
        super::Settings {
            segment_bytes: 100,
            retention_bytes: 250,
            retention_ms: -1,
            ..super::Settings::default()
        },
    );
    for i in 0..6 {
        _ = log
            .produce(&tp(), keyed(&[("k", Some(&format!("v{i}")))]))
            .unwrap();
    }
    let done = log.clean(now());
    assert!(done.expired_segments > 0, "{done:?}");
    let (start, high) = log
        .with_partition(&tp(), |p| (p.log_start(), p.high_watermark()))
        .unwrap();
    assert_eq!(high, 6);
    assert!(start > 0 && start < 6, "log start {start}");
    let kept = records(&log, IsolationLevel::ReadUncommitted);
    assert_eq!(kept.first().map(|r| r.0), Some(start));
    assert_eq!(kept.last().map(|r| r.0), Some(5));
}

#[test]
fn a_keyless_record_is_refused_by_a_compacted_topic() {
    let log = Log::in_memory();
    log.configure("t", compacting(1 << 20, 0));
    assert_eq!(
        log.produce(&tp(), batch(-1, -1, -1, 1, false)),
        Err(ErrorCode::InvalidRecord)
    );
}

#[test]
fn reads_go_to_the_segment_files_beyond_the_cache_and_survive_a_restart_after_cleaning() {
    let dir = std::env::temp_dir().join(format!("devbroker-log-{}", uuid::Uuid::new_v4()));
    let value = "x".repeat(1000);
    {
        let log = Log::open(&dir, &HashSet::new()).unwrap();
        log.configure("t", compacting(64 * 1024, 0));
        // 2,000 records over 50 keys: ~2 MB, beyond the in-memory cache, in ~30 segments.
        for i in 0..2000 {
            let key = format!("k{}", i % 50);
            _ = log.produce(&tp(), keyed(&[(&key, Some(&value))])).unwrap();
        }
        assert_eq!(records(&log, IsolationLevel::ReadUncommitted).len(), 2000);
        _ = log.clean(now());
        let left = records(&log, IsolationLevel::ReadUncommitted);
        assert!(left.len() < 200, "{} records left", left.len());
        // The latest of each key is there.
        for k in 0..50 {
            assert!(
                left.iter().any(|r| r.1 == format!("k{k}") && r.0 >= 1950),
                "k{k}"
            );
        }
    }
    let log = Log::open(&dir, &HashSet::new()).unwrap();
    let left = records(&log, IsolationLevel::ReadUncommitted);
    assert!(
        left.len() < 200 && left.len() >= 50,
        "{} after restart",
        left.len()
    );
    assert_eq!(
        log.with_partition(&tp(), |p| p.high_watermark()).unwrap(),
        2000
    );
    assert_eq!(log.produce(&tp(), keyed(&[("k0", Some("new"))])), Ok(2000));
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_interrupted_swap_is_finished_on_open() {
    let dir = std::env::temp_dir().join(format!("devbroker-log-{}", uuid::Uuid::new_v4()));
    let partition = dir.join("t-0");
    {
        let log = Log::open(&dir, &HashSet::new()).unwrap();
        log.configure("t", compacting(100, 0));
        for i in 0..4 {
            _ = log
                .produce(&tp(), keyed(&[("k", Some(&format!("v{i}")))]))
                .unwrap();
        }
    }
    // A cleaned replacement of segments 0..2 holding only offset 1, sealed as a swap whose
    // sources were not yet removed when the broker stopped.
    let kept = fs::read(partition.join(format!("{:020}.log", 1))).unwrap();
    fs::write(partition.join(format!("{:020}-{:020}.swap", 0, 2)), &kept).unwrap();
    fs::write(partition.join(format!("{:020}.cleaned", 2)), b"partial").unwrap();
    let log = Log::open(&dir, &HashSet::new()).unwrap();
    assert_eq!(
        records(&log, IsolationLevel::ReadUncommitted)
            .iter()
            .map(|r| r.0)
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let mut names: Vec<String> = fs::read_dir(&partition)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "state")
        .collect();
    names.sort();
    assert_eq!(
        names,
        (0..=3)
            .filter(|b| *b != 1)
            .map(|b| format!("{b:020}.log"))
            .collect::<Vec<_>>()
    );
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn keys_are_read_from_uncompressed_records_without_decoding_them() {
    let keyed = keyed(&[("a", Some("1")), ("bb", None), ("ccc", Some("3"))]);
    assert_eq!(
        super::uncompressed_keys(&keyed.record_data, keyed.record_count),
        Some(true)
    );
    let keyless = batch(-1, -1, -1, 3, false);
    assert_eq!(
        super::uncompressed_keys(&keyless.record_data, keyless.record_count),
        Some(false)
    );
    assert!(!super::has_keyless_record(&keyed));
    assert!(super::has_keyless_record(&keyless));
    // Cut short: unreadable, refused as keyless.
    assert_eq!(super::uncompressed_keys(&keyed.record_data[..3], 3), None);
}
