//! `habitat topics apply` on devbroker and `habitat schemas register | check` on the
//! schema registry, with real brokers and a real Postgres.

use std::process::Command;

use contracts::topology::{TOPICS_YAML, Topology};
use habitat::{
    schemas::{self, SubjectSchema, Verdict},
    topics::{self, Action, Mode},
};
use rdkafka::{
    admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier},
    client::DefaultClientContext,
};
use serde_json::Value;
use test_support::{client_config, database, kafka, unique};

/// topics.yaml with every topic renamed under a prefix of this test's own.
fn private_topology() -> (Topology, String) {
    let prefix = unique("t");
    let yaml = TOPICS_YAML
        .replace("name: habitat.", &format!("name: {prefix}."))
        .replace("\"habitat.dlq.", &format!("\"{prefix}.dlq."));
    (Topology::parse(&yaml).expect("topology"), prefix)
}

fn count(actions: &[Action], matches: impl Fn(&Action) -> bool) -> usize {
    actions.iter().filter(|a| matches(a)).count()
}

#[test]
fn topics_apply_creates_reports_drift_and_alters_only_when_asked() {
    let (topology, prefix) = private_topology();
    let total = topology.all_topics("dev").unwrap().len();
    let bootstrap = &kafka().bootstrap;

    let planned = topics::apply(
        bootstrap,
        &topology,
        "dev",
        Mode {
            dry_run: true,
            alter: false,
        },
    )
    .unwrap();
    assert_eq!(
        count(&planned, |a| matches!(a, Action::WouldCreate(_))),
        total
    );
    let created = topics::apply(bootstrap, &topology, "dev", Mode::default()).unwrap();
    assert_eq!(
        count(&created, |a| matches!(a, Action::Created(_))),
        total,
        "{created:?}"
    );
    let again = topics::apply(bootstrap, &topology, "dev", Mode::default()).unwrap();
    assert_eq!(
        count(&again, |a| matches!(a, Action::Unchanged(_))),
        total,
        "{again:?}"
    );

    // Someone changes a setting by hand.
    let people = format!("{prefix}.people");
    let admin: AdminClient<DefaultClientContext> = client_config().create().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let context_topics = topology.context_topics("dev").unwrap();
    let mut changed = AlterConfig::new(ResourceSpecifier::Topic(&people));
    for (key, value) in &context_topics[0].config {
        changed = changed.set(
            key,
            if key == "min.compaction.lag.ms" {
                "1"
            } else {
                value
            },
        );
    }
    for result in runtime
        .block_on(admin.alter_configs(&[changed], &AdminOptions::new()))
        .unwrap()
    {
        result.expect("alter by hand");
    }

    let drift = |actions: &[Action], altered: bool| {
        actions
            .iter()
            .filter(|a| {
                matches!(a, Action::Drift { topic, key, actual, desired, altered: done }
                    if *topic == people && key == "min.compaction.lag.ms"
                        && actual.as_deref() == Some("1") && desired == "3600000" && *done == altered)
            })
            .count()
    };
    let reported = topics::apply(bootstrap, &topology, "dev", Mode::default()).unwrap();
    assert_eq!(drift(&reported, false), 1, "{reported:?}");
    let still = topics::apply(
        bootstrap,
        &topology,
        "dev",
        Mode {
            dry_run: false,
            alter: false,
        },
    )
    .unwrap();
    assert_eq!(
        drift(&still, false),
        1,
        "drift is left alone without --alter"
    );
    let altered = topics::apply(
        bootstrap,
        &topology,
        "dev",
        Mode {
            dry_run: false,
            alter: true,
        },
    )
    .unwrap();
    assert_eq!(drift(&altered, true), 1, "{altered:?}");
    let settled = topics::apply(bootstrap, &topology, "dev", Mode::default()).unwrap();
    assert_eq!(
        count(&settled, |a| matches!(a, Action::Unchanged(_))),
        total,
        "{settled:?}"
    );
}

#[test]
fn topics_apply_on_an_unreachable_broker_says_so_in_one_line() {
    let port = devstack::process::free_port().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_habitat"))
        .args([
            "topics",
            "apply",
            "--bootstrap-servers",
            &format!("127.0.0.1:{port}"),
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("error: cannot reach the Kafka broker at 127.0.0.1:"),
        "{stderr}"
    );
}

async fn registry() -> String {
    schema_registry::spawn_local(&database()).await.unwrap()
}

/// The catalog with one schema changed by `edit`.
fn edited(full_name_suffix: &str, edit: impl Fn(&mut Vec<Value>)) -> Vec<SubjectSchema> {
    schemas::catalog()
        .into_iter()
        .map(|mut entry| {
            if entry.subject.ends_with(full_name_suffix) {
                let mut schema: Value = serde_json::from_str(&entry.schema).unwrap();
                edit(schema["fields"].as_array_mut().unwrap());
                entry.schema = schema.to_string();
            }
            entry
        })
        .collect()
}

#[tokio::test]
async fn schemas_register_then_check_and_an_incompatible_change_is_named() {
    let registry = registry().await;
    let catalog = schemas::catalog();
    let before = schemas::check(&registry, None, &catalog).await.unwrap();
    assert!(before.iter().all(|(_, v)| *v == Verdict::New));

    let ids = schemas::register(&registry, None, &catalog).await.unwrap();
    assert_eq!(ids.len(), 30);
    assert_eq!(
        schemas::register(&registry, None, &catalog).await.unwrap(),
        ids,
        "idempotent"
    );
    let verdicts = schemas::check(&registry, None, &catalog).await.unwrap();
    assert!(
        verdicts.iter().all(|(_, v)| *v == Verdict::Compatible),
        "{verdicts:?}"
    );
    schemas::report(&verdicts).unwrap();

    // A new field with a default is a compatible change.
    let compatible = edited(".people.MemberRegistered", |fields| {
        fields.push(serde_json::json!({"name": "nickname", "type": ["null", "string"], "default": null, "doc": "x"}));
    });
    let verdicts = schemas::check(&registry, None, &compatible).await.unwrap();
    assert!(
        verdicts.iter().all(|(_, v)| *v == Verdict::Compatible),
        "{verdicts:?}"
    );

    // A new field without a default is not.
    let breaking = edited(".people.MemberRegistered", |fields| {
        fields.push(serde_json::json!({"name": "nickname", "type": "string", "doc": "x"}));
    });
    let verdicts = schemas::check(&registry, None, &breaking).await.unwrap();
    let subject = "habitat.people-habitat.people.MemberRegistered";
    let (_, verdict) = verdicts.iter().find(|(s, _)| s == subject).unwrap();
    match verdict {
        Verdict::Incompatible(reasons) => {
            assert!(
                reasons
                    .iter()
                    .any(|r| r.contains("BACKWARD") && r.contains("nickname")),
                "{reasons:?}"
            );
        }
        other => panic!("expected incompatible, got {other:?}"),
    }
    let error = schemas::report(&verdicts).unwrap_err().to_string();
    assert!(
        error.contains(subject) && error.contains("BACKWARD_TRANSITIVE"),
        "{error}"
    );
    let rejected = schemas::register(&registry, None, &breaking)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        rejected.contains(subject) && rejected.contains("409"),
        "{rejected}"
    );
}

#[tokio::test]
async fn the_catalog_can_follow_every_released_schema() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(schemas::HISTORY_PATH);
    let history = schemas::load_history(&path).unwrap();
    let catalog = schemas::catalog();
    for entry in &catalog {
        assert_eq!(
            history.get(&entry.subject).and_then(|v| v.last()),
            Some(&entry.schema),
            "{} changed since its last release: run `./habitat schemas snapshot` and commit \
             schemas/history.json",
            entry.subject
        );
    }
    let registry = registry().await;
    let verdicts = schemas::check_history(&registry, &history, &catalog)
        .await
        .unwrap();
    schemas::report(&verdicts).unwrap();
}

#[tokio::test]
async fn the_history_gate_stops_a_change_no_released_reader_could_follow() {
    let mut history = schemas::History::new();
    assert_eq!(
        schemas::snapshot(&mut history, &schemas::catalog()).len(),
        30
    );
    assert!(schemas::snapshot(&mut history, &schemas::catalog()).is_empty());
    let breaking = edited(".treasury.PeriodClosed", |fields| {
        fields.push(serde_json::json!({"name": "auditor", "type": "string", "doc": "x"}));
    });
    let registry = registry().await;
    let verdicts = schemas::check_history(&registry, &history, &breaking)
        .await
        .unwrap();
    let error = schemas::report(&verdicts).unwrap_err().to_string();
    assert!(
        error.contains("habitat.treasury-habitat.treasury.PeriodClosed"),
        "{error}"
    );
}

/// `habitat tail` with the stack's variables pointing at the test broker and `registry`.
fn tail(registry: &str, args: &[&str]) -> Vec<Value> {
    let output = Command::new(env!("CARGO_BIN_EXE_habitat"))
        .arg("tail")
        .args(args)
        .env("HABITAT_BOOTSTRAP_SERVERS", &kafka().bootstrap)
        .env("HABITAT_SCHEMA_REGISTRY_URL", registry)
        .env("HABITAT_KAFKA_BROKER_ADDRESS_FAMILY", "v4")
        .output()
        .expect("habitat tail");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_committed_records_as_the_proxys_json() {
    use contracts::records::{Event, MemberRegistered, MemberStatus};
    use habitat_runtime::{Codec, avro::AvroCodec};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

    let registry = registry().await;
    tokio::task::block_in_place(|| test_support::create_topic_blocking("habitat.people", 6));
    let codec = AvroCodec::new(&registry, tokio::runtime::Handle::current()).unwrap();
    let tenant = unique("tail");
    let member = |tenant: &str, id: &str| -> Event {
        MemberRegistered {
            meta: test_support::records::meta(
                tenant,
                "people.MemberRegistered",
                &uuid::Uuid::now_v7().to_string(),
                chrono::Utc::now(),
            ),
            member_id: id.to_owned(),
            display_name: format!("Member {id}"),
            joined_on: chrono::NaiveDate::from_ymd_opt(2026, 1, 2).unwrap(),
            status: MemberStatus::Active,
            email: None,
        }
        .into()
    };
    let events = [
        member(&tenant, "m-1"),
        member("another-coop", "m-1"),
        member(&tenant, "m-2"),
    ];
    let encoded: Vec<(String, Vec<u8>)> = tokio::task::block_in_place(|| {
        events
            .iter()
            .map(|e| (e.key(), codec.encode("habitat.people", e).unwrap()))
            .collect()
    });
    // A producer compressing with zstd, as many clusters' producers do: read back decoded.
    let producer: BaseProducer = client_config()
        .set("compression.type", "zstd")
        .set("linger.ms", "50")
        .create()
        .unwrap();
    for (key, value) in &encoded {
        let record = BaseRecord::to("habitat.people")
            .key(key.as_str())
            .payload(value.as_slice())
            .partition(0);
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    let tombstone = format!("{tenant}/member/m-1");
    producer
        .send(
            BaseRecord::<str, [u8]>::to("habitat.people")
                .key(tombstone.as_str())
                .partition(0),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(std::time::Duration::from_secs(30)).unwrap();

    let records = tokio::task::block_in_place(|| {
        tail(
            &registry,
            &[
                "habitat.people",
                "--from-beginning",
                "--tenant",
                &tenant,
                "--limit",
                "10",
            ],
        )
    });
    assert_eq!(records.len(), 3, "{records:?}");
    assert_eq!(records[0]["event_type"], "people.MemberRegistered");
    assert_eq!(records[0]["tenant_id"], tenant.as_str());
    assert_eq!(records[0]["payload"]["member_id"], "m-1");
    assert_eq!(records[0]["payload"]["joined_on"], "2026-01-02");
    assert!(records[0]["payload"].get("meta").is_none());
    assert_eq!(
        records[0]["meta"]["event_id"],
        events[0].meta().event_id.as_str()
    );
    assert_eq!(records[0]["topic"], "habitat.people");
    assert_eq!(records[0]["partition"], 0);
    assert!(records[0]["offset"].as_i64().is_some());
    assert_eq!(records[1]["payload"]["member_id"], "m-2");
    assert_eq!(
        (
            records[2]["key"].as_str(),
            records[2]["tombstone"].as_bool()
        ),
        (Some(tombstone.as_str()), Some(true))
    );

    let by_key = tokio::task::block_in_place(|| {
        tail(
            &registry,
            &[
                "habitat.people",
                "--from-beginning",
                "--key",
                &format!("{tenant}/member/m-2"),
                "--type",
                "people.MemberRegistered",
                "--limit",
                "5",
            ],
        )
    });
    assert_eq!(by_key.len(), 1, "{by_key:?}");
    assert_eq!(by_key[0]["payload"]["member_id"], "m-2");

    // The cluster's settings reach the client: one librdkafka refuses is named.
    let refused = Command::new(env!("CARGO_BIN_EXE_habitat"))
        .args(["tail", "habitat.people", "--limit", "1"])
        .args(["--kafka", "security.protocol=NOT-A-PROTOCOL"])
        .env("HABITAT_BOOTSTRAP_SERVERS", &kafka().bootstrap)
        .env("HABITAT_SCHEMA_REGISTRY_URL", &registry)
        .output()
        .expect("habitat tail");
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && message.contains("security.protocol"),
        "{message}"
    );
}

/// `habitat partition`: where a producer writing straight to Kafka must put a tenant's
/// records — Kafka's murmur2 of the tenant id (values computed with an independent
/// implementation of Kafka's `Utils.murmur2`), on each context topic of the release's or a
/// deployment's topics.yaml.
#[test]
fn partition_names_a_tenants_partition_on_every_context_topic() {
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_habitat"))
            .arg("partition")
            .args(args)
            .env_remove("HABITAT_TOPICS_FILE")
            .output()
            .expect("habitat partition");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (ok, out, _) = run(&["coop-a"]);
    assert!(ok);
    assert_eq!(
        out,
        "habitat.people partition 1 of 6\nhabitat.treasury partition 1 of 6\n\
         habitat.agreements partition 1 of 6\n"
    );
    for (tenant, partitions, expected) in [("coop-a", "24", "19"), ("demo-coop", "6", "5")] {
        let (ok, out, _) = run(&[tenant, "--partitions", partitions]);
        assert_eq!(
            (ok, out.trim()),
            (true, expected),
            "{tenant} of {partitions}"
        );
    }
    // A tenant id outside the ids' alphabet is refused, as the proxy refuses it.
    let (ok, _, err) = run(&["Coöp"]);
    assert!(!ok && err.contains("is not a tenant id"), "{err}");
    let deployed = test_support::scratch_dir()
        .join(unique("topics"))
        .with_extension("yaml");
    std::fs::write(
        &deployed,
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../topics.yaml"),
        )
        .expect("topics.yaml")
        .replacen("  partitions: 6", "  partitions: 24", 1),
    )
    .expect("write");
    let (ok, out, err) = run(&["coop-a", "--topics-file", deployed.to_str().expect("utf-8")]);
    assert!(ok, "{err}");
    assert!(out.contains("habitat.people partition 19 of 24"), "{out}");
}
