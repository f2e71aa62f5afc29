//! `habitat up | status | down` on real processes: idempotent start, two stacks side by
//! side, and `down` stopping exactly what its own `up` started.

mod common;

use common::{Stack, says};
use devstack::process::is_alive;

#[test]
fn two_stacks_run_side_by_side_and_down_stops_only_its_own() {
    let a = Stack::new();
    let b = Stack::new();

    let output = a.habitat("up", a.broker_port);
    assert!(output.status.success(), "{output:?}");
    let up = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(up.contains(&format!("127.0.0.1:{}", a.broker_port)), "{up}");
    // Progress, as plain lines when stderr is not a terminal: each service to ready.
    let progress = String::from_utf8_lossy(&output.stderr);
    for service in [
        "patronage-aggregator",
        "postgres-sink",
        "outbox-relay",
        "rest-proxy",
    ] {
        assert!(
            progress
                .lines()
                .any(|line| line.starts_with(&format!("{service} ready in "))),
            "{service}: {progress}"
        );
    }
    assert!(
        up.contains(&format!("127.0.0.1:{}/habitat", a.postgres_port)),
        "{up}"
    );
    let first_pid = a.broker_pid();
    _ = b.run("up");
    for port in [
        a.broker_port,
        a.postgres_port,
        a.registry_port,
        a.proxy_port,
        a.metrics_port + 4,
        a.metrics_port + 5,
        b.broker_port,
        b.postgres_port,
        b.registry_port,
        b.proxy_port,
        b.metrics_port + 4,
        b.metrics_port + 5,
    ] {
        assert!(Stack::accepts(port), "port {port}");
    }

    // Running `up` again reuses what runs.
    _ = a.run("up");
    assert_eq!(a.broker_pid(), first_pid);

    // A port held by another program is refused with the way out, and nothing starts.
    let c = Stack::new();
    let clash = c.habitat("up", a.broker_port);
    assert!(!clash.status.success());
    let message = String::from_utf8_lossy(&clash.stderr);
    assert!(
        message.contains(&format!("port {} is in use", a.broker_port))
            && message.contains("--broker-port"),
        "{message}"
    );
    assert!(!c.dir.join("postgres").join("data").exists());

    let parts = [
        "devbroker",
        "registry",
        "postgres",
        "patronage-aggregator",
        "allocation-calculator",
        "payment-schedule-creator",
        "distribution-recorder",
        "postgres-sink",
        "outbox-relay",
        "rest-proxy",
    ];
    let status = a.run("status");
    for part in parts {
        assert!(says(&status, part, "running"), "{part}: {status}");
    }

    // The stack's database has an outbox, relayed: an event enqueued in a transaction
    // reaches the sink's tables.
    let psql = |sql: &str| {
        let output = devstack::postgres::PgBin::locate()
            .expect("Postgres")
            .command("psql")
            .args(["-h", "127.0.0.1", "-U", "habitat", "-d", "habitat", "-At"])
            .args(["-v", "ON_ERROR_STOP=1"])
            .arg(format!("--port={}", a.postgres_port))
            .arg(format!("--command={sql}"))
            .output()
            .expect("psql");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    // The stack's Postgres has the WAL buffers docs/operations.md recommends for the sink.
    assert_eq!(psql("SHOW wal_buffers"), "16MB");
    _ = psql(
        "BEGIN; SELECT habitat_outbox.enqueue('people.MemberRegistered', 'coop-outbox', \
         '{\"member_id\": \"m-1\", \"display_name\": \"Ana\", \"joined_on\": \"2026-01-02\", \
         \"status\": \"ACTIVE\"}'); COMMIT;",
    );
    test_support::wait_for(
        std::time::Duration::from_secs(60),
        "the outbox's event in the sink",
        || {
            (psql("SELECT count(*) FROM habitat.members WHERE tenant_id = 'coop-outbox'") == "1")
                .then_some(())
        },
    );
    let outbox = std::process::Command::new(env!("CARGO_BIN_EXE_habitat"))
        .args(["outbox", "status", "--database-url"])
        .arg(format!(
            "postgres://habitat@127.0.0.1:{}/habitat",
            a.postgres_port
        ))
        .output()
        .expect("habitat outbox status");
    let outbox = String::from_utf8_lossy(&outbox.stdout);
    assert!(outbox.starts_with("pending: 0 "), "{outbox}");
    assert!(outbox.contains("dead letters: 0"), "{outbox}");

    every_metric_the_dashboard_and_the_rules_name_is_exported(&a);

    // The undecodable record above is a dead letter in the sink's table; an operator
    // re-drives every NEW one at once, with progress.
    let letters: Vec<String> = test_support::wait_for(
        std::time::Duration::from_secs(60),
        "the dead letter in the sink's table",
        || {
            let ids = psql(
                "SELECT string_agg(id::text, ' ') FROM habitat.dead_letters WHERE status = 'NEW'",
            );
            (!ids.is_empty()).then(|| ids.split(' ').map(str::to_owned).collect())
        },
    );
    let redrive = std::process::Command::new(env!("CARGO_BIN_EXE_habitat"))
        .args(["dlq", "redrive", "--all-new", "--by", "ops:test"])
        .env(
            "HABITAT_DATABASE_URL",
            format!("postgres://habitat@127.0.0.1:{}/habitat", a.postgres_port),
        )
        .env(
            "HABITAT_BOOTSTRAP_SERVERS",
            format!("127.0.0.1:{}", a.broker_port),
        )
        .output()
        .expect("habitat dlq redrive");
    let (out, err) = (
        String::from_utf8_lossy(&redrive.stdout),
        String::from_utf8_lossy(&redrive.stderr),
    );
    assert!(redrive.status.success(), "{out}\n{err}");
    for id in &letters {
        assert!(
            out.contains(&format!("Dead letter {id} re-driven to habitat.people")),
            "{id}: {out}"
        );
    }
    let n = letters.len();
    assert!(
        err.lines()
            .any(|line| line.starts_with(&format!("dlq redrive: {n} of {n} letters done in "))),
        "{err}"
    );

    // A program that dies is started again by its supervisor (devbroker on its data
    // directory and port), and `status` says so.
    for part in ["devbroker", "postgres-sink"] {
        let program = a.program_pid(part).expect("a supervised program");
        assert!(devstack::process::signal(program, libc::SIGKILL), "{part}");
        _ = test_support::wait_for(
            std::time::Duration::from_secs(60),
            &format!("{part} started again"),
            || a.program_pid(part).filter(|pid| *pid != program),
        );
    }
    // Postgres crashing (immediate shutdown) is started again too.
    let postgres = a.program_pid("postgres").expect("a supervised Postgres");
    devstack::postgres::Cluster::new(
        devstack::postgres::PgBin::locate().expect("Postgres binaries"),
        &a.dir.join("postgres"),
        a.postgres_port,
        devstack::postgres::ClusterOptions::default(),
    )
    .stop_immediately()
    .expect("crash Postgres");
    _ = test_support::wait_for(
        std::time::Duration::from_secs(60),
        "Postgres started again",
        || a.program_pid("postgres").filter(|pid| *pid != postgres),
    );
    test_support::wait_for(
        std::time::Duration::from_secs(60),
        "devbroker and Postgres serving again",
        || (Stack::accepts(a.broker_port) && Stack::accepts(a.postgres_port)).then_some(()),
    );
    let status = a.run("status");
    for part in ["devbroker", "postgres-sink"] {
        let line = status
            .lines()
            .find(|line| line.starts_with(part))
            .unwrap_or_default();
        assert!(
            says(&status, part, "running") && line.contains("1 restart, last: killed by signal 9"),
            "{part}: {status}"
        );
    }

    let down = a.run("down");
    for stopped in [
        "Stopped devbroker",
        "Stopped Postgres",
        "Stopped rest-proxy",
        "Stopped postgres-sink",
        "Stopped patronage-aggregator",
    ] {
        assert!(down.contains(stopped), "{stopped}: {down}");
    }
    assert!(!is_alive(first_pid));
    for port in [
        a.broker_port,
        a.postgres_port,
        a.registry_port,
        a.proxy_port,
        a.metrics_port,
    ] {
        assert!(!Stack::accepts(port), "port {port} still open");
    }
    let status = a.run("status");
    for part in parts {
        assert!(says(&status, part, "stopped"), "{part}: {status}");
    }

    // The other stack is untouched.
    assert!(is_alive(b.broker_pid()));
    for port in [
        b.broker_port,
        b.postgres_port,
        b.registry_port,
        b.proxy_port,
    ] {
        assert!(Stack::accepts(port), "port {port}");
    }
}

/// Scrapes every program of the running stack and holds the dashboard's and the alert rules'
/// expressions to the series they export. A record no processor can decode (a producer
/// writing straight to the topic) and an unauthenticated post make the dead-letter and HTTP
/// series appear, as they would in production.
fn every_metric_the_dashboard_and_the_rules_name_is_exported(stack: &Stack) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
    use std::time::Duration;

    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set(
            "bootstrap.servers",
            format!("127.0.0.1:{}", stack.broker_port),
        )
        .create()
        .expect("producer");
    producer
        .send(
            BaseRecord::to("habitat.people")
                .key("coop-metrics/member/m-1")
                .payload(b"not avro".as_slice()),
        )
        .map_err(|(e, _)| e)
        .expect("send");
    producer.flush(Duration::from_secs(30)).expect("flush");
    let unauthenticated = {
        use std::io::{Read as _, Write as _};
        let mut stream =
            std::net::TcpStream::connect(("127.0.0.1", stack.proxy_port)).expect("the proxy");
        write!(
            stream,
            "POST /v1/events HTTP/1.0\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n"
        )
        .expect("request");
        let mut answer = String::new();
        _ = stream.read_to_string(&mut answer).expect("answer");
        answer
    };
    assert!(
        unauthenticated.starts_with("HTTP/1.0 401"),
        "{unauthenticated}"
    );

    let endpoints: Vec<u16> = (0..6)
        .map(|i| stack.metrics_port + i)
        .chain([stack.registry_port, stack.proxy_port])
        .collect();
    let expressions = habitat::monitoring::expressions().expect("the shipped files");
    // Counted only once it happens (the family is the runtime's own, checked by name).
    let after_an_event = [habitat_runtime::metrics::names::INVARIANT_BREAKS];
    let missing = || {
        let mut exported = std::collections::BTreeSet::new();
        for port in &endpoints {
            let body = devstack::process::http_get(*port, "/metrics").unwrap_or_default();
            exported.extend(habitat::monitoring::exported_names(&body));
        }
        let missing: Vec<String> = expressions
            .iter()
            .flat_map(|e| {
                habitat::monitoring::metric_names(&e.expr)
                    .into_iter()
                    .filter(|name| {
                        !exported.contains(name) && !after_an_event.contains(&name.as_str())
                    })
                    .map(|name| format!("{}: {name}", e.place))
                    .collect::<Vec<_>>()
            })
            .collect();
        missing
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let missing = missing();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "named but exported by no program: {missing:#?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
