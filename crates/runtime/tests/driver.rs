//! The runtime's scenarios through the in-memory test driver (no broker): the same
//! counting processor the broker tests run as a process.

#[path = "../examples/counter/processor.rs"]
mod processor;

use std::{collections::BTreeMap, time::Duration};

use chrono::TimeDelta;
use habitat_runtime::{TestDriver, Utf8, dlq};
use processor::{COUNTS, Counter};

const OUT: &str = "counts-out";

fn driver() -> TestDriver<Counter> {
    TestDriver::new(Counter {
        name: "counter".to_owned(),
        output: OUT.to_owned(),
    })
    .with_partitions(4)
}

fn key(i: usize) -> String {
    format!("t{}/item/{}", i % 7, i % 50)
}

/// Every output per key is 1, 2, …, n once, in order.
fn assert_exact(outputs: &[String], expected: &BTreeMap<String, u64>) {
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for output in outputs {
        let (key, count) = output.rsplit_once('=').expect("key=count");
        seen.entry(key.to_owned())
            .or_default()
            .push(count.parse().expect("count"));
    }
    for (key, n) in expected {
        assert_eq!(
            seen.remove(key).unwrap_or_default(),
            (1..=*n).collect::<Vec<_>>(),
            "{key}"
        );
    }
    assert!(seen.is_empty(), "unexpected keys: {seen:?}");
}

#[test]
fn exactly_once_across_restarts() {
    let mut driver = driver();
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..2_000 {
        driver
            .pipe("in", &key(i), format!("{i}"))
            .expect("processed");
        *expected.entry(key(i)).or_default() += 1;
        if i % 400 == 399 {
            driver.restart();
        }
    }
    let outputs = driver.take_values();
    assert_exact(&outputs, &expected);
    for (key, n) in &expected {
        assert_eq!(driver.get::<u64>(COUNTS, key), Some(*n), "{key}");
    }
}

#[test]
fn partitions_that_move_keep_their_counts() {
    let mut driver = driver();
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..1_000 {
        driver
            .pipe("in", &key(i), format!("{i}"))
            .expect("processed");
        *expected.entry(key(i)).or_default() += 1;
        if i == 500 {
            // Half the partitions go to another instance, which restores them.
            driver.revoke(&[0, 1]);
        }
    }
    let outputs = driver.take_values();
    assert_exact(&outputs, &expected);
    assert!(expected.keys().any(|k| driver.partition_of(k) < 2));
}

#[test]
fn outputs_go_to_the_tenant_partition() {
    let mut driver = driver();
    driver
        .pipe("in", "coop-a/item/1", "x".to_owned())
        .expect("processed");
    let out = driver.take_outputs();
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].partition,
        contracts::partition::tenant_partition("coop-a", 4)
    );
    assert_eq!(out[0].key, "coop-a/item/1");
}

#[test]
fn poison_is_dead_lettered_and_the_rest_processed() {
    let mut driver = driver();
    driver
        .pipe("in", "t1/item/1", "a".to_owned())
        .expect("processed");
    driver
        .pipe("in", "t1/item/1", "poison".to_owned())
        .expect("dead-lettered");
    driver
        .pipe_bytes(&Utf8, "in", "t1/item/1", &[0xff, 0xfe])
        .expect("dead-lettered");
    driver
        .pipe("in", "t1/item/1", "b".to_owned())
        .expect("processed");
    let outputs = driver.take_values();
    assert_eq!(outputs, ["t1/item/1=1", "t1/item/1=2"]);
    let letters = driver.dead_letters();
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0].class, "poison");
    assert_eq!(letters[0].source_offset, 1);
    assert_eq!(letters[1].class, dlq::class::DESERIALIZATION);
    assert_eq!(letters[1].value.as_deref(), Some(&[0xff, 0xfe][..]));
    assert!(
        letters[1].message.contains("UTF-8"),
        "{}",
        letters[1].message
    );
    let headers: BTreeMap<_, _> = letters[0].headers().into_iter().collect();
    assert_eq!(headers[dlq::headers::SOURCE_TOPIC], b"in");
    assert_eq!(headers[dlq::headers::SOURCE_OFFSET], b"1");
    assert_eq!(headers[dlq::headers::PROCESSOR], b"counter");
    assert_eq!(headers[dlq::headers::ERROR_CLASS], b"poison");
}

#[test]
fn a_rejected_record_leaves_no_state() {
    let mut driver = driver();
    driver
        .pipe("in", "t1/item/1", "timer:notanumber".to_owned())
        .expect("dead-lettered");
    assert_eq!(driver.dead_letters().len(), 1);
    assert!(driver.take_outputs().is_empty());
    assert_eq!(driver.get::<u64>(COUNTS, "t1/item/1"), None);
}

#[test]
fn a_timer_due_before_a_crash_fires_once_after_the_restart() {
    let mut driver = driver();
    driver
        .pipe("in", "t2/item/9", "timer:30".to_owned())
        .expect("scheduled");
    assert_eq!(
        driver.take_outputs()[0].value.as_deref(),
        Some("scheduled:t2/item/9")
    );
    driver.advance(Duration::from_secs(10)).expect("advanced");
    assert!(driver.take_outputs().is_empty(), "not due yet");
    driver.restart();
    let due = driver.now() + TimeDelta::seconds(25);
    driver.set_time(due).expect("advanced");
    // The partition is restored on its next record; its timer then fires.
    driver
        .pipe("in", "t2/item/9", "x".to_owned())
        .expect("processed");
    driver.advance(Duration::from_secs(3600)).expect("advanced");
    driver.restart();
    driver
        .pipe("in", "t2/item/9", "y".to_owned())
        .expect("processed");
    let fired: Vec<_> = driver
        .take_values()
        .into_iter()
        .filter(|v| v.starts_with("fired:"))
        .collect();
    assert_eq!(fired, ["fired:t2/item/9"]);
}
