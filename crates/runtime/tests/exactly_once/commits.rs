//! What a commit holds: at-least-once mode, a SIGTERM's last commit, dead letters with their headers.

use super::*;

#[test]
fn at_least_once_writes_every_output_then_commits_the_offsets() {
    let setup = Setup::with_config("alo", "session_timeout_ms: 6000\nexactly_once: false\n");
    let mut expected = BTreeMap::new();
    let mut out = Reader::new(&setup.output);
    let _instance = setup.start("a", &[]);
    produce(&setup.input, &records(0..2_000, &mut expected));
    out.await_count(2_000, "every output");
    assert_exact(&out.values(), &expected);
    // The offsets follow the acknowledged outputs: all 2,000 inputs end up committed.
    let group: BaseConsumer = client_config()
        .set("group.id", &setup.name)
        .create()
        .expect("consumer");
    let mut partitions = rdkafka::TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        partitions.add_partition(&setup.input, partition);
    }
    wait_for(LONG, "every input offset committed", || {
        let committed = rdkafka::consumer::Consumer::committed_offsets(
            &group,
            partitions.clone(),
            Duration::from_secs(5),
        )
        .ok()?;
        let total: i64 = committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                rdkafka::Offset::Offset(n) => Some(n),
                _ => None,
            })
            .sum();
        (total == 2_000).then_some(())
    });
}

#[test]
fn sigterm_commits_and_leaves_the_group() {
    // A session timeout far longer than the wait below: partitions can only move because
    // the stopped instance left the group.
    let setup = Setup::with_config("sigterm", "session_timeout_ms: 120000\n");
    let mut expected = BTreeMap::new();
    let mut out = Reader::new(&setup.output);
    let [(mut a, port_a), (mut b, _)] = setup.start_pair();
    produce(&setup.input, &records(0..2_000, &mut expected));
    out.await_count(2_000, "both instances working");
    let pid = i32::try_from(b.0.id()).expect("pid");
    assert!(devstack::process::signal(pid, libc::SIGTERM));
    let status = wait_for(LONG, "b to stop", || b.0.try_wait().expect("wait"));
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
    assert!(setup.log("b").contains("clean=true"), "{}", setup.log("b"));
    wait_for(Duration::from_secs(60), "a to take b's partitions", || {
        (assigned(port_a)? == 4.0).then_some(())
    });
    produce(&setup.input, &records(2_000..4_000, &mut expected));
    out.await_count(4_000, "a to count the rest");
    kill(&mut a);
    assert_eq!(out.records.len(), 4_000);
    assert_exact(&out.values(), &expected);
}

#[test]
fn poison_records_are_dead_lettered_with_headers() {
    let setup = Setup::new("poison");
    let mut expected = BTreeMap::new();
    let mut input = records(0..500, &mut expected);
    input.insert(100, ("t1/item/poisoned".to_owned(), b"poison".to_vec()));
    input.insert(300, ("t2/item/garbled".to_owned(), vec![0xff, 0x00, 0xfe]));
    let port = free_port();
    let mut instance = setup.start(
        "0",
        &[("HABITAT_METRICS_LISTEN", format!("127.0.0.1:{port}"))],
    );
    produce(&setup.input, &input);
    let mut out = Reader::new(&setup.output);
    out.await_count(500, "the good records");
    let mut dead = Reader::new(&format!("habitat.dlq.{}", setup.name));
    dead.await_count(2, "two dead letters");
    let metrics = wait_for(
        Duration::from_secs(30),
        "metrics to count every record",
        || {
            let body = devstack::process::http_get(port, "/metrics")?;
            (devstack::process::metric_value(&body, "habitat_records_in_total", &[]) == Some(502.0))
                .then_some(body)
        },
    );
    let probe = |path| devstack::process::http_get(port, path);
    assert_eq!(probe("/healthz").as_deref(), Some("ok\n"));
    assert_eq!(probe("/readyz").as_deref(), Some("ready\n"));
    kill(&mut instance);
    assert_exact(&out.values(), &expected);
    assert_eq!(dead.records.len(), 2);
    let by_key: BTreeMap<&str, _> = dead
        .records
        .iter()
        .map(|(k, v, h)| (k.as_str(), (v, h)))
        .collect();
    let (value, headers) = by_key["t1/item/poisoned"];
    assert_eq!(value.as_slice(), b"poison");
    let headers: BTreeMap<&str, String> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    assert_eq!(headers[dlq::headers::SOURCE_TOPIC], setup.input);
    assert_eq!(
        headers[dlq::headers::SOURCE_PARTITION],
        partition_for("t1/item/poisoned", PARTITIONS).to_string()
    );
    assert!(headers[dlq::headers::SOURCE_OFFSET].parse::<i64>().is_ok());
    assert_eq!(headers[dlq::headers::PROCESSOR], setup.name);
    assert_eq!(headers[dlq::headers::ERROR_CLASS], "poison");
    assert!(headers[dlq::headers::ERROR_MESSAGE].contains("carries poison"));
    assert!(headers.contains_key(dlq::headers::TIME));
    let (garbled, headers) = by_key["t2/item/garbled"];
    assert_eq!(garbled.as_slice(), [0xff, 0x00, 0xfe]);
    assert!(headers.iter().any(
        |(k, v)| k == dlq::headers::ERROR_CLASS && v == dlq::class::DESERIALIZATION.as_bytes()
    ));
    // Every consumed record is in the outputs or dead-lettered.
    for class in ["poison", dlq::class::DESERIALIZATION] {
        let count = devstack::process::metric_value(
            &metrics,
            "habitat_dead_letters_total",
            &[("class", class)],
        );
        assert_eq!(count, Some(1.0), "{class}: {metrics}");
    }
    let outputs = devstack::process::metric_value(
        &metrics,
        "habitat_records_out_total",
        &[("topic", &setup.output)],
    );
    assert_eq!(outputs, Some(500.0), "{metrics}");
    // The process's own metrics beside the runtime's.
    assert!(
        devstack::process::metric_value(&metrics, "process_resident_memory_bytes", &[])
            .is_some_and(|bytes| bytes > 0.0),
        "{metrics}"
    );
}

#[test]
fn a_broken_invariant_writes_nothing_and_halts_until_stopped() {
    let setup = Setup::new("broken");
    let mut expected = BTreeMap::new();
    let mut input = records(0..200, &mut expected);
    input.insert(100, ("t1/item/broken".to_owned(), b"broken".to_vec()));
    let port = free_port();
    let mut instance = setup.start(
        "0",
        &[("HABITAT_METRICS_LISTEN", format!("127.0.0.1:{port}"))],
    );
    produce(&setup.input, &input);
    let ready = wait_for(LONG, "the instance to halt", || {
        devstack::process::http_get(port, "/readyz").filter(|body| body.contains("halted"))
    });
    assert_eq!(
        ready,
        "not ready: halted: invariant count-positive broken: t1/item/broken would count below one\n"
    );
    let metrics = devstack::process::http_get(port, "/metrics").expect("metrics");
    let breaks = devstack::process::metric_value(
        &metrics,
        "habitat_invariant_breaks_total",
        &[("invariant", "count-positive")],
    );
    assert_eq!(breaks, Some(1.0), "{metrics}");
    // Halted, not exited: a restart would only break it again.
    assert!(instance.0.try_wait().expect("status").is_none());
    // What was committed before the break is there; the broken record and its batch are not.
    let committed = devstack::process::metric_value(
        &metrics,
        "habitat_records_out_total",
        &[("topic", &setup.output)],
    )
    .unwrap_or_default();
    let mut out = Reader::new(&setup.output);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    out.await_count(committed as usize, "the outputs committed before the break");
    assert!(out.records.len() < 201);
    assert!(
        out.records
            .iter()
            .all(|(key, _, _)| key != "t1/item/broken")
    );
    // Stopped by an operator: exit 1.
    let pid = i32::try_from(instance.0.id()).expect("pid");
    assert!(devstack::process::signal(pid, libc::SIGTERM));
    let status = wait_for(LONG, "the halted instance to stop", || {
        instance.0.try_wait().expect("wait")
    });
    assert_eq!(status.code(), Some(1), "{}", setup.log("0"));
}
