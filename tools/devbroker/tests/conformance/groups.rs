//! kcat and consumer groups: metadata, committed reads, rebalances, members that die.

use super::*;

#[test]
fn kcat_lists_metadata() {
    let topic = unique("kcat-meta");
    create_topic_blocking(&topic, 3);
    let listing = kcat_output(kcat().args(["-L", "-t", &topic]));
    assert!(
        listing.contains(&format!("topic \"{topic}\" with 3 partitions")),
        "{listing}"
    );
}

#[test]
fn kcat_consumes_committed_records() {
    let topic = unique("kcat-consume");
    create_topic_blocking(&topic, 1);
    let producer = transactional_producer(&unique("txn"));
    producer.begin_transaction().expect("begin");
    send(&producer, &topic, 0, "hidden");
    producer.flush(TIMEOUT).expect("flush");
    producer.abort_transaction(TIMEOUT).expect("abort");
    producer.begin_transaction().expect("begin");
    send(&producer, &topic, 0, "one");
    send(&producer, &topic, 0, "two");
    producer.commit_transaction(TIMEOUT).expect("commit");

    let consumed = kcat_output(kcat().args([
        "-C",
        "-t",
        &topic,
        "-o",
        "beginning",
        "-e",
        "-q",
        "-X",
        "isolation.level=read_committed",
    ]));
    assert_eq!(consumed.lines().collect::<Vec<_>>(), ["one", "two"]);
}

#[test]
fn consumer_group_rebalances_between_two_members() {
    let topic = unique("rebalance");
    let group = unique("group");
    create_topic_blocking(&topic, 4);
    let assigned = |consumer: &BaseConsumer| -> BTreeSet<i32> {
        consumer
            .assignment()
            .expect("assignment")
            .elements()
            .iter()
            .map(|e| e.partition())
            .collect()
    };
    let first = consumer("read_committed", Some(&group));
    first.subscribe(&[&topic]).expect("subscribe");
    wait_for(TIMEOUT, "the first member to own every partition", || {
        _ = first.poll(Duration::from_millis(50));
        (assigned(&first).len() == 4).then_some(())
    });

    let second = consumer("read_committed", Some(&group));
    second.subscribe(&[&topic]).expect("subscribe");
    let (a, b) = wait_for(TIMEOUT, "the partitions to be shared", || {
        _ = first.poll(Duration::from_millis(50));
        _ = second.poll(Duration::from_millis(50));
        let (a, b) = (assigned(&first), assigned(&second));
        (a.len() == 2 && b.len() == 2).then_some((a, b))
    });
    assert!(a.is_disjoint(&b));
    assert_eq!(
        a.union(&b).copied().collect::<BTreeSet<_>>(),
        (0..4).collect()
    );

    drop(second);
    wait_for(
        TIMEOUT,
        "the first member to own every partition again",
        || {
            _ = first.poll(Duration::from_millis(50));
            (assigned(&first).len() == 4).then_some(())
        },
    );
}

/// Helper process: joins `CONFORMANCE_GROUP` on `CONFORMANCE_TOPIC` and keeps polling
/// (so it heartbeats) until it is killed.
#[test]
#[ignore = "run as a child process by the killed-member test"]
fn member_left_without_leaving() {
    let topic = std::env::var("CONFORMANCE_TOPIC").expect("CONFORMANCE_TOPIC");
    let group = std::env::var("CONFORMANCE_GROUP").expect("CONFORMANCE_GROUP");
    let member: BaseConsumer = client_config()
        .set("group.id", &group)
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .expect("consumer");
    member.subscribe(&[&topic]).expect("subscribe");
    let mut announced = false;
    loop {
        _ = member.poll(Duration::from_millis(50));
        if !announced && member.assignment().is_ok_and(|a| a.count() > 0) {
            println!("JOINED");
            announced = true;
        }
    }
}

#[test]
fn sigkilled_member_partitions_move_after_its_session_timeout() {
    let topic = unique("expiry");
    let group = unique("group");
    create_topic_blocking(&topic, 4);
    let survivor: BaseConsumer = client_config()
        .set("group.id", &group)
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .expect("consumer");
    survivor.subscribe(&[&topic]).expect("subscribe");
    let owned = |consumer: &BaseConsumer| consumer.assignment().map_or(0, |a| a.count());
    wait_for(TIMEOUT, "the survivor to own every partition", || {
        _ = survivor.poll(Duration::from_millis(50));
        (owned(&survivor) == 4).then_some(())
    });

    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "groups::member_left_without_leaving",
            "--ignored",
            "--nocapture",
        ])
        .env("CONFORMANCE_TOPIC", &topic)
        .env("CONFORMANCE_GROUP", &group)
        .env(test_support::BROKERS_ENV, &kafka().bootstrap)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the member process");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().expect("piped");
    _ = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("JOINED") {
                _ = tx.send(());
            }
        }
    });
    let mut joined = false;
    wait_for(TIMEOUT, "the partitions to be shared", || {
        _ = survivor.poll(Duration::from_millis(50));
        joined |= rx.try_recv().is_ok();
        (joined && owned(&survivor) == 2).then_some(())
    });

    child.kill().expect("SIGKILL the member");
    _ = child.wait();
    wait_for(TIMEOUT, "the killed member's partitions to move", || {
        _ = survivor.poll(Duration::from_millis(50));
        (owned(&survivor) == 4).then_some(())
    });
}
