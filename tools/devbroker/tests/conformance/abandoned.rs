//! Producers that die mid-transaction: their transaction never shows, and is aborted after its timeout.

use super::*;

/// Helper process: opens a transaction, produces, flushes, then waits to be killed.
#[test]
#[ignore = "run as a child process by the killed-producer tests"]
fn producer_left_mid_transaction() {
    let topic = std::env::var("CONFORMANCE_TOPIC").expect("CONFORMANCE_TOPIC");
    let producer: BaseProducer = client_config()
        .set(
            "transactional.id",
            std::env::var("CONFORMANCE_TXN_ID").expect("CONFORMANCE_TXN_ID"),
        )
        .set(
            "transaction.timeout.ms",
            std::env::var("CONFORMANCE_TXN_TIMEOUT_MS").expect("CONFORMANCE_TXN_TIMEOUT_MS"),
        )
        .create()
        .expect("producer");
    producer.init_transactions(TIMEOUT).expect("init");
    producer.begin_transaction().expect("begin");
    for i in 0..100 {
        send(&producer, &topic, 0, &format!("killed-{i}"));
    }
    producer.flush(TIMEOUT).expect("flush");
    println!("PRODUCED");
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn sigkilled_producer_restarted_with_same_id_never_shows_its_transaction() {
    let topic = unique("killed");
    create_topic_blocking(&topic, 1);
    let transactional_id = unique("txn");
    let mut child = spawn_abandoning_producer(&topic, &transactional_id, 600_000);
    child.kill().expect("SIGKILL the producer");
    _ = child.wait();

    let uncommitted = consumer("read_uncommitted", None);
    assert_eq!(
        watermarks(&uncommitted, &topic).1,
        100,
        "the killed transaction's records are in the log"
    );

    // Restarting with the same transactional.id aborts the abandoned transaction.
    let restarted = transactional_producer(&transactional_id);
    restarted.begin_transaction().expect("begin");
    send(&restarted, &topic, 0, "after-restart");
    restarted.commit_transaction(TIMEOUT).expect("commit");

    let reader = consumer("read_committed", None);
    assign_from_beginning(&reader, &topic, 1);
    let read = read_until(&reader, "the restarted producer's record", |seen| {
        seen.iter().any(|(_, v)| v == "after-restart")
    });
    assert_eq!(values(&read), ["after-restart"]);
}

#[test]
fn sigkilled_producer_transaction_is_aborted_after_its_timeout() {
    let topic = unique("timeout");
    create_topic_blocking(&topic, 1);
    let mut child = spawn_abandoning_producer(&topic, &unique("txn"), 2_000);
    child.kill().expect("SIGKILL the producer");
    _ = child.wait();

    let other = plain_producer();
    send(&other, &topic, 0, "after-timeout");
    other.flush(TIMEOUT).expect("flush");

    // The LSO is stuck at 0 until the broker aborts the transaction on its timeout.
    let reader = consumer("read_committed", None);
    assign_from_beginning(&reader, &topic, 1);
    let read = read_until(
        &reader,
        "the record after the abandoned transaction",
        |seen| seen.iter().any(|(_, v)| v == "after-timeout"),
    );
    assert_eq!(values(&read), ["after-timeout"]);
}
