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
        let log = Log::open(&dir, &HashSet::new()).unwrap();
        _ = log.produce(&tp(), batch(1, 0, 0, 2, true)).unwrap();
        _ = log.end_txn(&tp(), 1, 0, true).unwrap();
        _ = log.produce(&tp(), batch(2, 0, 0, 2, true)).unwrap();
    }
    let log = Log::open(&dir, &HashSet::new()).unwrap();
    let read = log
        .with_partition(&tp(), |p| p.read(0, 1 << 20, IsolationLevel::ReadCommitted))
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
    let segment = fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
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
        .unwrap();
    assert_eq!(offsets(&read), vec![0, 2]);
    fs::remove_dir_all(dir).unwrap();
}
