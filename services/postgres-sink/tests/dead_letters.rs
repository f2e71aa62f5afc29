//! Dead letters for operators: the sink's own (a record naming a schema the registry
//! does not have yet) and a processor's, listed; the sink's re-driven once the schema is
//! registered — and then written — and resolved once. (One test per binary: the schema
//! ids this test predicts are its registry's alone.)

mod common;

use std::time::Duration;

use common::{Coop, Post, Stack, post};
use contracts::{EventRecord, records::Event, wire};
use habitat_runtime::{
    dlq::{DeadLetter, class},
    partition_for,
};
use postgres_sink::dlq::{self, DlqError};
use rdkafka::{
    message::{Header, OwnedHeaders},
    producer::{BaseProducer, BaseRecord, Producer},
};
use test_support::{client_config, kafka, unique, wait_for};

fn send_raw(topic: &str, key: &str, value: &[u8], headers: OwnedHeaders, partitions: i32) {
    let producer: BaseProducer = client_config().create().expect("producer");
    producer
        .send(
            BaseRecord::to(topic)
                .key(key)
                .payload(value)
                .headers(headers)
                .partition(partition_for(key, partitions)),
        )
        .map_err(|(e, _)| e)
        .expect("send");
    producer.flush(Duration::from_secs(30)).expect("flush");
}

#[test]
fn dead_letters_are_listed_redriven_once_fixed_and_resolved_once() {
    let stack = Stack::new();
    let tenant = unique("coop");
    let mut coop = Coop::new(&tenant);
    // Registers the first schema; the next one registered gets the next id.
    let member = coop.member("m-1", "Ana");
    post(&stack.codec, &[Post::Event(member)]);
    let first_id = wire::unframe(
        &habitat_runtime::Codec::encode(&stack.codec, "habitat.people", &coop.member("m-9", "x"))
            .expect("encode"),
    )
    .expect("framed")
    .0;

    // A contribution written with a schema id this registry does not know yet.
    let Event::ContributionApproved(work) = coop.contribution("c-1", "m-1", "99.99", true) else {
        unreachable!()
    };
    let body = work.to_avro_bytes().expect("avro");
    let unknown = wire::frame(first_id + 1, &body);
    let key = format!("{tenant}/contribution/c-1");
    send_raw(
        "habitat.people",
        &key,
        &unknown,
        OwnedHeaders::new(),
        end_to_end::PARTITIONS,
    );

    // A processor's dead letter.
    let letter = DeadLetter {
        source_topic: "habitat.people".to_owned(),
        source_partition: 1,
        source_offset: 17,
        processor: "patronage-aggregator".to_owned(),
        class: "domain".to_owned(),
        message: "negative value".to_owned(),
        time: "2026-03-02T10:00:00Z".parse().expect("time"),
        key: Some(format!("{tenant}/contribution/c-bad").into_bytes()),
        value: Some(b"opaque".to_vec()),
    };
    let headers = letter
        .headers()
        .into_iter()
        .fold(OwnedHeaders::new(), |h, (k, v)| {
            h.insert(Header {
                key: &k,
                value: Some(&v),
            })
        });
    send_raw(
        "habitat.dlq.patronage-aggregator",
        &format!("{tenant}/contribution/c-bad"),
        b"opaque",
        headers,
        end_to_end::PARTITIONS,
    );

    // Bytes that are not a record at all.
    send_raw(
        "habitat.people",
        &format!("{tenant}/member/m-garbage"),
        b"not avro",
        OwnedHeaders::new(),
        end_to_end::PARTITIONS,
    );

    let port = devstack::process::free_port().expect("port");
    let sink = stack.sink_with(&[("HABITAT_METRICS_LISTEN", format!("127.0.0.1:{port}"))]);
    stack.caught_up();
    let letters = wait_for(Duration::from_secs(60), "the three dead letters", || {
        let found = stack.query(dlq::list(&stack.pool, None, Some("NEW")));
        (found.len() == 3).then_some(found)
    });
    let garbage = letters
        .iter()
        .find(|l| l.record_key.as_deref() == Some(&format!("{tenant}/member/m-garbage")))
        .expect("the undecodable record's letter");
    assert_eq!(
        (garbage.processor.as_str(), garbage.error_class.as_str()),
        ("postgres-sink", class::DESERIALIZATION)
    );
    // Counted once the batch is settled (just after its commit).
    let counted = |metrics: &str, class: &str| {
        devstack::process::metric_value(metrics, "habitat_dead_letters_total", &[("class", class)])
    };
    let metrics = wait_for(Duration::from_secs(30), "the dead letters counted", || {
        let metrics = devstack::process::http_get(port, "/metrics")?;
        [class::DESERIALIZATION, class::UNKNOWN_SCHEMA, "domain"]
            .iter()
            .all(|c| counted(&metrics, c).is_some())
            .then_some(metrics)
    });
    for class in [class::DESERIALIZATION, class::UNKNOWN_SCHEMA, "domain"] {
        assert_eq!(counted(&metrics, class), Some(1.0), "{class} in\n{metrics}");
    }
    let own = letters
        .iter()
        .find(|l| l.record_key.as_deref() == Some(key.as_str()))
        .expect("the sink's letter of the unknown schema");
    assert_eq!(own.processor, "postgres-sink");
    assert_eq!(own.error_class, class::UNKNOWN_SCHEMA);
    assert_eq!(own.source_topic, "habitat.people");
    assert_eq!(own.tenant_id.as_deref(), Some(tenant.as_str()));
    assert_eq!(own.record_key.as_deref(), Some(key.as_str()));
    assert!(
        own.message.contains(&format!("schema id {}", first_id + 1)),
        "{}",
        own.message
    );
    let theirs = letters
        .iter()
        .find(|l| l.processor == "patronage-aggregator")
        .expect("the processor's letter");
    assert_eq!(
        (
            theirs.source_partition,
            theirs.source_offset,
            theirs.error_class.as_str()
        ),
        (1, 17, "domain")
    );
    let only_theirs = stack.query(dlq::list(&stack.pool, Some("patronage-aggregator"), None));
    assert_eq!(only_theirs.len(), 1);
    let shown = dlq::decoded_payload(own, Some(&stack.codec));
    assert!(shown["undecodable"].as_str().is_some(), "{shown}");
    assert_eq!(
        stack.query(
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM contributions WHERE tenant_id = $1")
                .bind(&tenant)
                .fetch_one(&stack.pool)
        ),
        0
    );

    // Fix the cause: the schema gets registered (and takes the id the record names).
    let registered =
        habitat_runtime::Codec::encode(&stack.codec, "habitat.people", &Event::from(work.clone()))
            .expect("register");
    assert_eq!(wire::unframe(&registered).expect("framed").0, first_id + 1);
    let shown = dlq::decoded_payload(own, Some(&stack.codec));
    assert_eq!(shown["contribution_id"], "c-1", "{shown}");

    // Two operators at once: one publishes, the other is refused.
    let (first, second) = stack.rt.block_on(async {
        let settings = common::kafka_settings();
        tokio::join!(
            dlq::redrive(
                &stack.pool,
                own.id,
                "ops:test",
                false,
                &kafka().bootstrap,
                &settings
            ),
            dlq::redrive(
                &stack.pool,
                own.id,
                "ops:test",
                false,
                &kafka().bootstrap,
                &settings
            ),
        )
    });
    let (redriven, refused) = match (first, second) {
        (Ok(redriven), Err(refused)) | (Err(refused), Ok(redriven)) => (redriven, refused),
        other => panic!("exactly one re-drive publishes: {other:?}"),
    };
    assert!(
        matches!(
            refused,
            DlqError::BeingRedriven { .. } | DlqError::AlreadyRedriven { .. }
        ),
        "{refused}"
    );
    assert_eq!(redriven.topic, "habitat.people");
    let value: String = wait_for(
        Duration::from_secs(60),
        "the re-driven record's row",
        || {
            stack.query(
            sqlx::query_scalar::<_, String>(
                "SELECT value::text FROM contributions WHERE tenant_id = $1 AND contribution_id = 'c-1'",
            )
            .bind(&tenant)
            .fetch_optional(&stack.pool),
        )
        },
    );
    assert_eq!(value, "99.99");
    let after = stack.query(dlq::get(&stack.pool, own.id));
    assert_eq!(
        (after.status.as_str(), after.redrive_count),
        ("REDRIVEN", 1)
    );
    assert_eq!(after.redriven_by.as_deref(), Some("ops:test"));

    // A re-driven letter is re-driven again only when asked.
    let refused = stack
        .rt
        .block_on(dlq::redrive(
            &stack.pool,
            own.id,
            "ops:test",
            false,
            &kafka().bootstrap,
            &common::kafka_settings(),
        ))
        .expect_err("re-driven already");
    assert!(
        matches!(refused, DlqError::AlreadyRedriven { .. }),
        "{refused}"
    );
    assert!(refused.to_string().contains("--again"), "{refused}");
    _ = stack.query(dlq::redrive(
        &stack.pool,
        own.id,
        "ops:test",
        true,
        &kafka().bootstrap,
        &common::kafka_settings(),
    ));
    assert_eq!(stack.query(dlq::get(&stack.pool, own.id)).redrive_count, 2);
    // Published twice in all: once by the concurrent pair, once with --again (counted up
    // to a marker written after them).
    post(
        &stack.codec,
        &[Post::Event(coop.member("m-marker", "Marker"))],
    );
    let mut people = end_to_end::TopicReader::new("habitat.people").lenient();
    let letter_id = own.id.to_string();
    let redriven =
        people.until_with_headers(&stack.codec, &tenant, "the marker", |events, headers| {
            events
                .iter()
                .any(|e| e.key().ends_with("/member/m-marker"))
                .then(|| {
                    headers
                        .iter()
                        .filter(|h| {
                            h.iter()
                                .any(|(k, v)| k == dlq::REDRIVEN_FROM && *v == letter_id)
                        })
                        .count()
                })
        });
    assert_eq!(redriven, 2);

    let resolved = stack.query(dlq::resolve(
        &stack.pool,
        own.id,
        "ops:test",
        "schema registered; re-driven",
    ));
    assert_eq!(resolved.status, "RESOLVED");
    let again = stack
        .rt
        .block_on(dlq::resolve(&stack.pool, own.id, "ops:other", "again"))
        .expect_err("a second resolve is refused");
    assert!(matches!(again, DlqError::AlreadyResolved { .. }), "{again}");
    assert!(
        again.to_string().contains("already resolved by ops:test"),
        "{again}"
    );
    let refused = stack
        .rt
        .block_on(dlq::redrive(
            &stack.pool,
            own.id,
            "ops:test",
            true,
            &kafka().bootstrap,
            &common::kafka_settings(),
        ))
        .expect_err("a resolved letter is not re-driven");
    assert!(matches!(refused, DlqError::AlreadyResolved { .. }));
    drop(sink);
}
