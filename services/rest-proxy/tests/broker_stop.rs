//! A batch interrupted by a broker stop writes nothing a read_committed reader can see: the
//! broker is frozen (SIGSTOP, 4 s) at moments while 100-event batches are in flight; every
//! batch answered 503 is absent afterwards, every batch answered 202 is there whole. (A
//! broker of its own: the test freezes it.)

mod common;

use common::client;
use std::{collections::BTreeMap, sync::Arc, time::Duration};

use contracts::records::Event;
use devstack::{broker, process::signal};
use habitat_runtime::{Codec, avro::AvroCodec};
use rdkafka::{
    Message, Offset, TopicPartitionList,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer},
};
use rest_proxy::{
    AppState, HttpMetrics, Limits, Partitions, RateLimit,
    idempotency::Idempotency,
    keys::{ANY, Keys},
    registry::Schemas,
    router,
    writer::{Writer, WriterConfig},
};
use serde_json::{Value, json};
use test_support::{scratch_dir, unique, wait_for};

fn batch(tenant: &str, round: usize) -> Value {
    let events: Vec<Value> = (0..100)
        .map(|i| {
            json!({"event_type": "people.MemberRegistered", "tenant_id": tenant,
                   "payload": {"member_id": format!("r{round}-m{i}"), "display_name": "M",
                               "joined_on": "2026-01-01", "status": "ACTIVE"}})
        })
        .collect();
    json!({ "events": events })
}

#[test]
fn a_batch_interrupted_by_a_broker_stop_writes_nothing_visible() {
    let broker = broker::start(
        &broker::binary().expect("devbroker"),
        Some(&scratch_dir().join(unique("stop-broker"))),
        None,
    )
    .expect("broker");
    let pid = i32::try_from(broker.child.id()).expect("pid");
    let mut child = broker.child;
    let bootstrap = broker.addr.to_string();
    let rt = end_to_end::runtime();
    rt.block_on(async {
        let admin: AdminClient<DefaultClientContext> = client(&bootstrap).create().expect("admin");
        admin
            .create_topics(
                &[NewTopic::new(
                    "habitat.people",
                    6,
                    TopicReplication::Fixed(1),
                )],
                &AdminOptions::new(),
            )
            .await
            .expect("create");
    });
    let registry = rt
        .block_on(schema_registry::spawn_local(&test_support::database()))
        .expect("registry");
    let tenant = unique("coop");
    let (pool, token) = common::key_store(&rt, "apps", &[ANY.to_owned()]);
    let state = AppState {
        keys: Arc::new(Keys::new(pool.clone(), Duration::from_secs(60))),
        rate: Arc::new(RateLimit::unlimited()),
        idempotency: Idempotency::new(pool),
        writer: Writer::start(WriterConfig {
            bootstrap_servers: bootstrap.clone(),
            transactional_id: unique("rest-proxy"),
            producers: 2,
            linger: Duration::from_millis(2),
            timeout: Duration::from_secs(2),
            kafka: vec![("broker.address.family".to_owned(), "v4".to_owned())],
        }),
        codec: Arc::new(AvroCodec::new(&registry, rt.handle().clone()).expect("codec")),
        partitions: Arc::new(Partitions::new(client(&bootstrap))),
        schemas: Arc::new(Schemas::new(&registry)),
        limits: Limits::default(),
        metrics: HttpMetrics::default(),
    };
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let url = format!(
        "http://{}/v1/events:batch",
        listener.local_addr().expect("addr")
    );
    _ = rt.spawn(async move { axum::serve(listener, router(state)).await });
    let post = |body: Value| {
        let request = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client")
            .post(&url)
            .bearer_auth(&token)
            .json(&body);
        rt.spawn(async move { request.send().await.map(|r| r.status().as_u16()) })
    };

    // Warm: keys, schema and partitions known, the producer's transactions initialised.
    assert_eq!(
        rt.block_on(post(batch(&tenant, 99)))
            .expect("task")
            .expect("post"),
        202
    );
    let mut answers = BTreeMap::new();
    // Frozen for 4 s — longer than the writer's 2 s timeout — at moments before and
    // during the transaction.
    for (round, delay) in [0_u64, 30, 60].into_iter().enumerate() {
        let answer = post(batch(&tenant, round));
        std::thread::sleep(Duration::from_millis(delay));
        assert!(signal(pid, libc::SIGSTOP));
        std::thread::sleep(Duration::from_secs(4));
        assert!(signal(pid, libc::SIGCONT));
        let status = rt.block_on(answer).expect("task").expect("post");
        _ = answers.insert(round, status);
    }
    assert_eq!(
        answers[&0], 503,
        "frozen before the batch was sent: {answers:?}"
    );
    assert!(
        answers.values().all(|s| *s == 202 || *s == 503),
        "{answers:?}"
    );
    eprintln!("answers by round: {answers:?}");

    // After a marker batch: each round is there whole or not at all.
    wait_for(Duration::from_secs(90), "the broker back", || {
        (rt.block_on(post(batch(&tenant, 50))).ok()?.ok()? == 202).then_some(())
    });
    let codec = AvroCodec::new(&registry, rt.handle().clone()).expect("codec");
    let consumer: BaseConsumer = client(&bootstrap)
        .set("group.id", unique("reader"))
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    for p in 0..6 {
        list.add_partition_offset("habitat.people", p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&list).expect("assign");
    let mut members: Vec<String> = Vec::new();
    wait_for(Duration::from_secs(60), "the marker batch", || {
        while let Some(message) = consumer.poll(Duration::from_millis(50)) {
            let message = message.expect("consume");
            if let Ok(Event::MemberRegistered(m)) =
                codec.decode("habitat.people", message.payload().unwrap_or_default())
            {
                members.push(m.member_id);
            }
        }
        (members.iter().filter(|m| m.starts_with("r50-")).count() == 100).then_some(())
    });
    for (round, status) in &answers {
        let found = members
            .iter()
            .filter(|m| m.starts_with(&format!("r{round}-")))
            .count();
        let expected = if *status == 202 { 100 } else { 0 };
        assert_eq!(found, expected, "round {round} answered {status}");
    }
    // A group consumer's close waits for its coordinator: closed while the broker still runs.
    drop(consumer);
    _ = child.kill();
    _ = child.wait();
}
