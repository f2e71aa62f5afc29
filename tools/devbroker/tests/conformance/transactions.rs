//! Transactions seen by read_committed and read_uncommitted readers: commit, abort, open, watermarks, consume-transform-produce, zombies fenced.

use super::*;

#[test]
fn a_topic_deleted_and_created_again_is_read_as_it_is_now() {
    let topic = unique("recreated");
    let read = create_write_read(&topic, 1, 0, "before");
    assert_eq!(values(&read), ["before"]);

    // Again with three partitions: fetches must not answer from what the broker knew of
    // the first one (one partition, its records).
    test_support::delete_topic_blocking(&topic);
    let read = create_write_read(&topic, 3, 2, "after");
    assert_eq!(read, [(0, "after".to_owned())]);
}

#[test]
fn commit_is_visible() {
    let topic = unique("commit");
    create_topic_blocking(&topic, 1);
    let producer = transactional_producer(&unique("txn"));
    producer.begin_transaction().expect("begin");
    for i in 0..5 {
        send(&producer, &topic, 0, &format!("r{i}"));
    }
    producer.commit_transaction(TIMEOUT).expect("commit");

    let reader = consumer("read_committed", None);
    assign_from_beginning(&reader, &topic, 1);
    let read = read_until(&reader, "five committed records", |seen| seen.len() >= 5);
    assert_eq!(values(&read), ["r0", "r1", "r2", "r3", "r4"]);
    assert_eq!(
        read.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
}

#[test]
fn abort_is_invisible_to_read_committed_and_visible_to_read_uncommitted() {
    let topic = unique("abort");
    create_topic_blocking(&topic, 1);
    let producer = transactional_producer(&unique("txn"));
    producer.begin_transaction().expect("begin");
    send(&producer, &topic, 0, "aborted-1");
    send(&producer, &topic, 0, "aborted-2");
    producer.flush(TIMEOUT).expect("flush");
    producer.abort_transaction(TIMEOUT).expect("abort");
    producer.begin_transaction().expect("begin");
    send(&producer, &topic, 0, "kept");
    producer.commit_transaction(TIMEOUT).expect("commit");

    let committed = consumer("read_committed", None);
    assign_from_beginning(&committed, &topic, 1);
    let read = read_until(&committed, "the committed record", |seen| {
        seen.iter().any(|(_, v)| v == "kept")
    });
    assert_eq!(values(&read), ["kept"]);

    let uncommitted = consumer("read_uncommitted", None);
    assign_from_beginning(&uncommitted, &topic, 1);
    let read = read_until(&uncommitted, "every record", |seen| {
        seen.iter().any(|(_, v)| v == "kept")
    });
    assert_eq!(values(&read), ["aborted-1", "aborted-2", "kept"]);
}

#[test]
fn open_transaction_is_invisible_until_commit() {
    let topic = unique("open");
    create_topic_blocking(&topic, 1);
    let producer = transactional_producer(&unique("txn"));
    producer.begin_transaction().expect("begin");
    send(&producer, &topic, 0, "pending-1");
    send(&producer, &topic, 0, "pending-2");
    producer.flush(TIMEOUT).expect("flush");

    // The records are on the broker: a read_uncommitted reader gets them.
    let uncommitted = consumer("read_uncommitted", None);
    assign_from_beginning(&uncommitted, &topic, 1);
    let read = read_until(&uncommitted, "the pending records", |seen| seen.len() >= 2);
    assert_eq!(values(&read), ["pending-1", "pending-2"]);

    // read_committed: the last stable offset holds at the transaction's first offset.
    let committed = consumer("read_committed", None);
    assert_eq!(watermarks(&committed, &topic), (0, 0));
    assign_from_beginning(&committed, &topic, 1);
    for _ in 0..5 {
        if let Some(message) = committed.poll(Duration::from_millis(100)) {
            panic!(
                "read a record of an open transaction: {:?}",
                message.map(|m| m.offset())
            );
        }
    }

    producer.commit_transaction(TIMEOUT).expect("commit");
    let read = read_until(&committed, "the records once committed", |seen| {
        seen.len() >= 2
    });
    assert_eq!(values(&read), ["pending-1", "pending-2"]);
}

#[test]
fn watermarks_and_last_stable_offset() {
    let topic = unique("marks");
    create_topic_blocking(&topic, 1);
    let producer = transactional_producer(&unique("txn"));
    producer.begin_transaction().expect("begin");
    for i in 0..3 {
        send(&producer, &topic, 0, &format!("c{i}"));
    }
    producer.commit_transaction(TIMEOUT).expect("commit");

    let committed = consumer("read_committed", None);
    let uncommitted = consumer("read_uncommitted", None);
    // Three records and their commit marker.
    assert_eq!(watermarks(&uncommitted, &topic), (0, 4));
    assert_eq!(watermarks(&committed, &topic), (0, 4));

    producer.begin_transaction().expect("begin");
    send(&producer, &topic, 0, "o0");
    send(&producer, &topic, 0, "o1");
    producer.flush(TIMEOUT).expect("flush");
    assert_eq!(watermarks(&uncommitted, &topic), (0, 6));
    assert_eq!(
        watermarks(&committed, &topic),
        (0, 4),
        "LSO at the open transaction"
    );

    producer.abort_transaction(TIMEOUT).expect("abort");
    assert_eq!(watermarks(&uncommitted, &topic), (0, 7));
    assert_eq!(
        watermarks(&committed, &topic),
        (0, 7),
        "LSO past the abort marker"
    );
}

#[test]
fn consume_transform_produce_with_offsets_in_the_transaction() {
    let input = unique("ctp-in");
    let output = unique("ctp-out");
    let group = unique("ctp-group");
    create_topic_blocking(&input, 1);
    create_topic_blocking(&output, 1);
    let source = plain_producer();
    for i in 0..10 {
        send(&source, &input, 0, &format!("in{i}"));
    }
    source.flush(TIMEOUT).expect("flush");

    let worker = consumer("read_committed", Some(&group));
    worker.subscribe(&[&input]).expect("subscribe");
    let producer = transactional_producer(&unique("ctp"));

    // Each cycle: read five, produce their transforms, commit offsets in the transaction.
    let cycle = |commit: bool| {
        producer.begin_transaction().expect("begin");
        let mut next = 0;
        for _ in 0..5 {
            let message = wait_for(TIMEOUT, "an input record", || {
                worker
                    .poll(Duration::from_millis(100))
                    .map(|m| m.expect("consume").detach())
            });
            let value =
                String::from_utf8_lossy(message.payload().unwrap_or_default()).to_uppercase();
            send(&producer, &output, 0, &value);
            next = message.offset() + 1;
        }
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(&input, 0, Offset::Offset(next))
            .expect("offset");
        let metadata = worker.group_metadata().expect("group metadata");
        producer
            .send_offsets_to_transaction(&offsets, &metadata, TIMEOUT)
            .expect("send offsets");
        if commit {
            producer.commit_transaction(TIMEOUT).expect("commit");
        } else {
            producer.flush(TIMEOUT).expect("flush");
            producer.abort_transaction(TIMEOUT).expect("abort");
        }
    };
    cycle(true);
    cycle(false);

    let committed = |consumer: &BaseConsumer| {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&input, 0);
        consumer
            .committed_offsets(tpl, Timeout::After(TIMEOUT))
            .expect("committed offsets")
            .find_partition(&input, 0)
            .expect("partition")
            .offset()
    };
    assert_eq!(
        committed(&worker),
        Offset::Offset(5),
        "the aborted cycle's offsets are not committed"
    );

    let reader = consumer("read_committed", None);
    assign_from_beginning(&reader, &output, 1);
    let read = read_until(&reader, "the committed transforms", |seen| seen.len() >= 5);
    assert_eq!(values(&read), ["IN0", "IN1", "IN2", "IN3", "IN4"]);
    let (_, high) = watermarks(&reader, &output);
    assert!(
        high > 5,
        "the aborted transforms are in the log, only hidden"
    );
}

#[test]
fn zombie_is_fenced() {
    let topic = unique("zombie");
    create_topic_blocking(&topic, 1);
    let transactional_id = unique("txn");
    let zombie = transactional_producer(&transactional_id);
    zombie.begin_transaction().expect("begin");
    send(&zombie, &topic, 0, "from-zombie");
    zombie.flush(TIMEOUT).expect("flush");

    let successor = transactional_producer(&transactional_id);
    let error = zombie
        .commit_transaction(TIMEOUT)
        .expect_err("the zombie must not commit");
    match &error {
        KafkaError::Transaction(e) => assert!(
            e.is_fatal()
                || matches!(
                    e.code(),
                    RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch
                ),
            "unexpected transaction error: {e}"
        ),
        other => panic!("unexpected error: {other}"),
    }

    successor.begin_transaction().expect("begin");
    send(&successor, &topic, 0, "from-successor");
    successor.commit_transaction(TIMEOUT).expect("commit");

    let reader = consumer("read_committed", None);
    assign_from_beginning(&reader, &topic, 1);
    let read = read_until(&reader, "the successor's record", |seen| {
        seen.iter().any(|(_, v)| v == "from-successor")
    });
    assert_eq!(values(&read), ["from-successor"]);
}

#[test]
fn zombie_between_transactions_is_fenced() {
    let topic = unique("idle-zombie");
    create_topic_blocking(&topic, 1);
    let transactional_id = unique("txn");
    let zombie = transactional_producer(&transactional_id);
    zombie.begin_transaction().expect("begin");
    send(&zombie, &topic, 0, "committed-by-zombie");
    zombie.commit_transaction(TIMEOUT).expect("commit");

    // The successor initialises while the zombie has no transaction open.
    let _successor = transactional_producer(&transactional_id);
    zombie.begin_transaction().expect("begin is local");
    send(&zombie, &topic, 0, "from-zombie");
    let error = zombie
        .commit_transaction(TIMEOUT)
        .expect_err("the zombie must not commit");
    assert!(
        matches!(&error, KafkaError::Transaction(e) if e.is_fatal() || e.txn_requires_abort()),
        "unexpected error: {error}"
    );
    let reader = consumer("read_committed", None);
    assign_from_beginning(&reader, &topic, 1);
    let read = read_until(&reader, "the first commit", |seen| !seen.is_empty());
    assert_eq!(values(&read), ["committed-by-zombie"]);
}
