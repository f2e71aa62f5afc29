//! Several inputs merged per partition: timestamp order, backlogs, open transactions, quiet inputs.

use super::*;

#[test]
fn inputs_are_merged_in_timestamp_order() {
    let setup = Setup::build("merge", "session_timeout_ms: 6000\n", 2);
    let second = format!("{}.in2", setup.name);
    let base = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    let key = "coop-m/item/1".to_owned();
    for (topic, value, second_offset) in [
        (&setup.input, "echo:a1", 1),
        (&setup.input, "echo:a3", 3),
        (&second, "echo:b2", 2),
        (&second, "echo:b4", 4),
        (&setup.input, "echo:a5", 5),
    ] {
        produce_at(
            topic,
            &[(key.clone(), value.as_bytes().to_vec())],
            Some(base + second_offset * 1_000),
        );
    }
    let mut out = Reader::new(&setup.output);
    let mut instance = setup.start("0", &[]);
    out.await_count(5, "every record echoed");
    kill(&mut instance);
    let order: Vec<String> = out
        .values()
        .iter()
        .map(|v| v.rsplit(':').next().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(order, ["a1", "b2", "a3", "b4", "a5"]);
}

#[test]
fn a_backlog_on_one_input_is_not_overtaken_by_a_later_record_of_the_other() {
    // Small buffers: the backlogged input empties between fetches again and again, while
    // the other input holds one later record the whole time. No idle allowance at all.
    let setup = Setup::build(
        "backlog",
        "session_timeout_ms: 6000\nmax_task_idle_ms: 0\nmax_buffered_records: 20\n",
        2,
    );
    let second = format!("{}.in2", setup.name);
    let base = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    let key = "coop-b/item/1".to_owned();
    let backlog: Vec<(String, Vec<u8>)> = (0..3_000)
        .map(|i| (key.clone(), format!("echo:a{i}").into_bytes()))
        .collect();
    produce_at(&setup.input, &backlog, Some(base));
    produce_at(
        &second,
        &[(key.clone(), b"echo:close".to_vec())],
        Some(base + 1_000),
    );
    let mut out = Reader::new(&setup.output);
    let mut instance = setup.start("0", &[]);
    out.await_count(3_001, "every record echoed");
    kill(&mut instance);
    let values = out.values();
    let close = values.iter().position(|v| v.ends_with(":close"));
    assert_eq!(close, Some(3_000), "the later record must come last");
}

#[test]
fn an_open_transaction_on_one_input_does_not_hold_the_other() {
    let setup = Setup::build("open-txn", "session_timeout_ms: 6000\n", 2);
    let second = format!("{}.in2", setup.name);
    let key = "coop-o/item/1".to_owned();
    // A transaction on the second input that stays open for minutes: its record is not
    // readable, and what follows it on that input cannot be read before it ends.
    let open: ThreadedProducer<DefaultProducerContext> = client_config()
        .set("transactional.id", format!("{}-open", setup.name))
        .set("transaction.timeout.ms", "600000")
        .create()
        .expect("transactional producer");
    open.init_transactions(Duration::from_secs(30))
        .expect("init transactions");
    open.begin_transaction().expect("begin");
    open.send(
        BaseRecord::<str, [u8]>::to(&second)
            .key(key.as_str())
            .payload(b"echo:uncommitted".as_slice())
            .partition(partition_for(&key, PARTITIONS)),
    )
    .map_err(|(e, _)| e)
    .expect("send");
    open.flush(Duration::from_secs(30)).expect("in the log");
    produce(&setup.input, &[(key.clone(), b"echo:first".to_vec())]);

    let mut out = Reader::new(&setup.output);
    let mut instance = setup.start("0", &[]);
    // The first input's record goes through while the transaction is still open (the
    // merge asks where the second input's committed records end, not its high watermark).
    wait_for(Duration::from_secs(60), "the first input's record", || {
        (out.poll() >= 1).then_some(())
    });
    assert!(out.values()[0].ends_with(":first"), "{:?}", out.values());
    open.abort_transaction(Duration::from_secs(30))
        .expect("abort");
    kill(&mut instance);
}

#[test]
fn a_quiet_input_is_committed_without_waiting_out_the_interval() {
    // An interval of ten minutes: only the commit on idle input can show the outputs.
    let setup = Setup::with_config(
        "idle",
        "session_timeout_ms: 6000\ncommit_interval_ms: 600000\ncommit_idle_ms: 5\n",
    );
    let records: Vec<(String, Vec<u8>)> = (0..3).map(|i| (key(i), b"1".to_vec())).collect();
    produce(&setup.input, &records);
    let mut out = Reader::new(&setup.output);
    let mut instance = setup.start("0", &[]);
    wait_for(
        Duration::from_secs(60),
        "the three counts committed",
        || (out.poll() >= 3).then_some(()),
    );
    kill(&mut instance);
    let expected: BTreeMap<String, u64> = records.iter().map(|(k, _)| (k.clone(), 1)).collect();
    assert_exact(&out.values(), &expected);
}
