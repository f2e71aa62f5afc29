//! The sink's operations through the `habitat` command line: `verify replay` exits 0 on a
//! healthy database and 1 with the difference printed after a row is altered; `report`
//! prints a view as JSON; `dlq list` prints the table.

use std::{collections::BTreeMap, process::Command, time::Duration};

use chrono::{NaiveDate, Utc};
use contracts::records::{Event, MemberRegistered, MemberStatus};
use habitat_runtime::config::KafkaSettings;
use postgres_sink::{
    store::Store,
    verify::{Source, rebuild},
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use test_support::{client_config, kafka, records::meta, unique};

fn habitat(args: &[&str], database_url: &str, registry: &str) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_habitat"))
        .args(args)
        .env("HABITAT_DATABASE_URL", database_url)
        .env("HABITAT_BOOTSTRAP_SERVERS", &kafka().bootstrap)
        .env("HABITAT_SCHEMA_REGISTRY_URL", registry)
        .env("HABITAT_KAFKA_BROKER_ADDRESS_FAMILY", "v4")
        .output()
        .expect("run habitat");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

#[test]
fn verify_report_and_dlq_from_the_command_line() {
    let rt = end_to_end::runtime();
    let (registry, codec) = end_to_end::stack(&rt);
    let tenant = unique("coop");
    let member: Event = MemberRegistered {
        meta: meta(
            &tenant,
            "people.MemberRegistered",
            &uuid::Uuid::now_v7().to_string(),
            Utc::now(),
        ),
        member_id: "m-1".to_owned(),
        display_name: "Ana".to_owned(),
        joined_on: NaiveDate::from_ymd_opt(2025, 1, 1).expect("date"),
        status: MemberStatus::Active,
        email: None,
    }
    .into();
    end_to_end::post(&codec, &[member]);

    // Write the live schema as the sink does, up to the end of every partition.
    let database_url = test_support::database();
    let consumer: BaseConsumer = client_config().create().expect("consumer");
    let mut targets = BTreeMap::new();
    for topic in ["habitat.people", "habitat.treasury", "habitat.agreements"] {
        for partition in 0..end_to_end::PARTITIONS {
            let (_, high) = consumer
                .fetch_watermarks(topic, partition, Duration::from_secs(10))
                .expect("watermarks");
            _ = targets.insert((topic.to_owned(), partition), high);
        }
    }
    let mut settings = KafkaSettings::default();
    _ = settings
        .0
        .insert("broker.address.family".to_owned(), "v4".to_owned());
    let source = Source {
        bootstrap_servers: kafka().bootstrap.clone(),
        schema_registry_url: registry.clone(),
        schema_registry_auth: None,
        kafka: settings,
    };
    let store = rt
        .block_on(Store::connect(
            &database_url,
            "habitat",
            postgres_sink::SINK,
        ))
        .expect("store");
    let handle = rt.handle().clone();
    let written = std::thread::scope(|s| {
        s.spawn(|| rebuild(&source, &store, &targets, 1000, &handle))
            .join()
            .expect("thread")
    })
    .expect("written");
    assert_eq!(written.records, 1);

    let (code, out) = habitat(&["verify", "replay"], &database_url, &registry);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("No differences"), "{out}");

    rt.block_on(sqlx::query("UPDATE members SET status = 'WITHDRAWN'").execute(store.pool()))
        .expect("alter");
    let (code, out) = habitat(&["verify", "replay"], &database_url, &registry);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("members {tenant}/member/m-1: differs")),
        "{out}"
    );
    assert!(
        out.contains("status: live \"WITHDRAWN\" / replay \"ACTIVE\""),
        "{out}"
    );

    let (code, out) = habitat(
        &[
            "report",
            "period-allocation",
            "--tenant",
            &tenant,
            "--format",
            "json",
        ],
        &database_url,
        &registry,
    );
    assert_eq!((code, out.trim()), (0, "[]"));
    let (code, out) = habitat(
        &["report", "trial", "--tenant", &tenant],
        &database_url,
        &registry,
    );
    assert_eq!(code, 1);
    assert!(
        out.contains("no report named \"trial\"; reports: period-allocation"),
        "{out}"
    );

    let (code, out) = habitat(&["dlq", "list"], &database_url, &registry);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 dead letter(s)."), "{out}");
    let (code, out) = habitat(
        &["dlq", "resolve", "7", "--by", "ops:x", "--reason", "n/a"],
        &database_url,
        &registry,
    );
    assert_eq!(code, 1);
    assert!(out.contains("no dead letter 7"), "{out}");
}

#[test]
fn api_keys_from_the_command_line() {
    let database_url = test_support::database();
    let run = |args: &[&str]| habitat(args, &database_url, "http://127.0.0.1:9");
    let (code, out) = run(&[
        "keys",
        "create",
        "--name",
        "apps",
        "--tenant",
        "coop-a",
        "--event-type",
        "people.MemberRegistered",
    ]);
    assert_eq!(code, 0, "{out}");
    let secret = out.lines().last().unwrap_or_default();
    assert!(secret.starts_with("hsk_") && secret.len() > 60, "{out}");
    let (code, out) = run(&["keys", "list"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("apps") && out.contains("coop-a") && !out.contains(secret),
        "{out}"
    );
    assert_eq!(run(&["keys", "revoke", "apps"]).0, 0);
    let (code, out) = run(&["keys", "revoke", "apps"]);
    assert_eq!(code, 1);
    assert!(out.contains("no live key named apps"), "{out}");
}
