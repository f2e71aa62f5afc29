//! Crashes, fencing and outages: outputs stay exact, timers fire once, a registry outage is waited out.

use super::*;

#[test]
fn exactly_once_under_crashes() {
    const TOTAL: usize = 20_000;
    let setup = Setup::new("crash");
    let mut expected = BTreeMap::new();
    let input = records(0..TOTAL, &mut expected);
    let mut out = Reader::new(&setup.output);
    let mut rng = rand::rng();
    let mut instance = setup.start("0", &[]);
    let mut kills = 0;
    for (i, chunk) in input.chunks(TOTAL / 4).enumerate() {
        produce(&setup.input, chunk);
        // Kill mid-stream at a random point of this chunk's progress, sometimes twice.
        for _ in 0..if i % 2 == 0 { 2 } else { 1 } {
            let target = out.poll() + rng.random_range(200..2_000);
            out.await_count(
                target.min(i * TOTAL / 4 + chunk.len() - 100),
                "progress before a kill",
            );
            kill(&mut instance);
            kills += 1;
            instance = setup.start("0", &[]);
        }
    }
    out.await_count(TOTAL, "every record to be counted");
    assert!(kills >= 5, "{kills} kills");
    // Nothing more arrives: a marker record goes through last.
    produce(&setup.input, &[("t0/item/end".to_owned(), b"end".to_vec())]);
    out.await_count(TOTAL + 1, "the end marker");
    kill(&mut instance);
    let values: Vec<String> = out
        .values()
        .into_iter()
        .filter(|v| !v.starts_with("t0/item/end"))
        .collect();
    assert_eq!(values.len(), TOTAL);
    assert_exact(&values, &expected);
    let mut state = final_counts(&setup);
    assert_eq!(state.remove("t0/item/end"), Some(1));
    assert_eq!(state, expected);
}

#[test]
fn a_registry_outage_is_waited_out_without_aborting_or_restoring_again() {
    let setup = Setup::new("registry-outage");
    let mut expected = BTreeMap::new();
    let mut input = records(0..2_000, &mut expected);
    // Decoding this one fails once as if the registry were down; the second try succeeds.
    input.insert(
        1_000,
        ("t3/item/flaky".to_owned(), b"unavailable-once".to_vec()),
    );
    _ = expected.insert("t3/item/flaky".to_owned(), 1);
    let port = free_port();
    let mut instance = setup.start(
        "0",
        &[("HABITAT_METRICS_LISTEN", format!("127.0.0.1:{port}"))],
    );
    produce(&setup.input, &input);
    let mut out = Reader::new(&setup.output);
    out.await_count(2_001, "every record, the flaky one included");
    let metrics = wait_for(LONG, "the registry reported back", || {
        let metrics = devstack::process::http_get(port, "/metrics")?;
        let up = devstack::process::metric_value(
            &metrics,
            "habitat_dependency_up",
            &[("dependency", "registry")],
        )?;
        (up == 1.0).then_some(metrics)
    });
    kill(&mut instance);
    let value = |name: &str, labels: &[(&str, &str)]| {
        devstack::process::metric_value(&metrics, name, labels).unwrap_or(0.0)
    };
    // The record was read again once the registry answered: no abort, no second restore.
    assert_eq!(
        value("habitat_transactions_total", &[("outcome", "aborted")]),
        0.0
    );
    assert_eq!(
        value(
            "habitat_store_restore_seconds_count",
            &[("store", "counts")]
        ),
        1.0
    );
    let log = setup.log("0");
    assert!(log.contains("Reachable again."), "{log}");
    assert_eq!(out.records.len(), 2_001);
    assert_exact(&out.values(), &expected);
}

#[test]
fn two_instances_one_killed_results_stay_exact() {
    let setup = Setup::new("move");
    let mut expected = BTreeMap::new();
    let mut out = Reader::new(&setup.output);
    let [(mut a, port_a), (mut b, _)] = setup.start_pair();
    produce(&setup.input, &records(0..3_000, &mut expected));
    out.await_count(1_000, "both instances working");
    kill(&mut b);
    produce(&setup.input, &records(3_000..6_000, &mut expected));
    out.await_count(6_000, "the survivor to take over");
    assert_eq!(assigned(port_a), Some(4.0), "a owns every partition");
    kill(&mut a);
    assert_eq!(out.records.len(), 6_000);
    assert_exact(&out.values(), &expected);
}

#[test]
fn zombie_instance_is_fenced_and_cannot_commit() {
    let setup = Setup::new("zombie");
    let mut expected = BTreeMap::new();
    let mut out = Reader::new(&setup.output);
    let mut zombie = setup.start("z", &[]);
    produce(&setup.input, &records(0..500, &mut expected));
    out.await_count(500, "the first instance to work");
    let pid = i32::try_from(zombie.0.id()).expect("pid");
    assert!(devstack::process::signal(pid, libc::SIGSTOP));
    // Its replacement, under the same instance id, fences it and takes over.
    let mut successor = setup.start("z", &[]);
    produce(&setup.input, &records(500..1_000, &mut expected));
    out.await_count(1_000, "the successor to take over");
    assert!(devstack::process::signal(pid, libc::SIGCONT));
    // The zombie rejoins the group; the first batch it tries to commit is refused.
    let mut next = 1_000;
    let status = wait_for(LONG, "the zombie to stop", || {
        produce(&setup.input, &records(next..next + 20, &mut expected));
        next += 20;
        zombie.0.try_wait().expect("wait")
    });
    assert!(
        !status.success(),
        "a fenced zombie exits non-zero: {status:?}"
    );
    let log = setup.log("z");
    assert!(
        log.to_lowercase().contains("fenced"),
        "the zombie says it was fenced:\n{log}"
    );
    out.await_count(next, "every record counted by the successor");
    kill(&mut successor);
    assert_eq!(out.records.len(), next);
    assert_exact(&out.values(), &expected);
}

#[test]
fn timer_due_before_a_crash_fires_once_after_the_restart() {
    // Static membership: each restart takes the killed instance's place at once.
    let setup = Setup::with_config(
        "timer",
        "static_membership: true\nsession_timeout_ms: 6000\n",
    );
    let mut out = Reader::new(&setup.output);
    let mut instance = setup.start("0", &[]);
    let scheduled_at = chrono::Utc::now();
    produce(
        &setup.input,
        &[("t5/item/1".to_owned(), b"timer:3".to_vec())],
    );
    out.await_count(1, "the timer to be scheduled");
    assert_eq!(out.values(), ["scheduled:t5/item/1"]);
    kill(&mut instance);
    wait_for(
        LONG,
        "the timer to fall due while the processor is down",
        || (chrono::Utc::now() > scheduled_at + chrono::TimeDelta::seconds(4)).then_some(()),
    );
    let mut instance = setup.start("0", &[]);
    out.await_count(2, "the timer to fire after the restart");
    // A later record goes through: the timer had its chance to fire twice.
    produce(&setup.input, &[("t5/item/1".to_owned(), b"after".to_vec())]);
    out.await_count(3, "a record after the timer");
    kill(&mut instance);
    let mut instance = setup.start("0", &[]);
    produce(&setup.input, &[("t5/item/1".to_owned(), b"again".to_vec())]);
    out.await_count(4, "a record after another restart");
    kill(&mut instance);
    let fired = out
        .values()
        .iter()
        .filter(|v| v.starts_with("fired:"))
        .count();
    assert_eq!(fired, 1, "{:?}", out.values());
}
