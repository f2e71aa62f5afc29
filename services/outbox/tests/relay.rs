//! The outbox on devbroker and Postgres: producers enqueue in their own transactions, the
//! relay (a process, SIGKILLed at random points) publishes every committed event exactly
//! once and no rolled-back one, in each transaction's order, and the sink gets them all.

use std::{
    collections::{BTreeMap, HashSet},
    process::{Child, Command, Stdio},
    time::Duration,
};

use contracts::records::Event;
use habitat_runtime::{Codec, avro::AvroCodec};
use rdkafka::{
    Message,
    consumer::{BaseConsumer, Consumer},
};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use test_support::{committed_reader, create_topic_blocking, kafka, scratch_dir, unique, wait_for};

const PEOPLE: &str = "habitat.people";
const PARTITIONS: i32 = 6;
const LONG: Duration = Duration::from_secs(180);

struct Setup {
    rt: tokio::runtime::Runtime,
    database_url: String,
    registry: String,
    codec: AvroCodec,
    name: String,
}

impl Setup {
    fn new() -> Self {
        Self::on(test_support::database())
    }

    /// The outbox in `database_url`'s database (the registry in the suite's own).
    fn on(database_url: String) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(outbox::install::install(
            &database_url,
            outbox::DEFAULT_SCHEMA,
        ))
        .expect("install the outbox");
        let registry = rt
            .block_on(schema_registry::spawn_local(&test_support::database()))
            .expect("registry");
        let codec = AvroCodec::new(&registry, rt.handle().clone()).expect("codec");
        create_topic_blocking(PEOPLE, PARTITIONS);
        Self {
            rt,
            database_url,
            registry,
            codec,
            name: unique("relay"),
        }
    }

    /// A relay process; `tag` names its log.
    fn relay(&self, tag: &str) -> Relay {
        self.relay_with(tag, &[])
    }

    fn log(&self, tag: &str) -> std::path::PathBuf {
        scratch_dir().join(format!("{}-{tag}.log", self.name))
    }

    /// A relay process with more variables.
    fn relay_with(&self, tag: &str, variables: &[(&str, String)]) -> Relay {
        let log = self.log(tag);
        let mut command = Command::new(env!("CARGO_BIN_EXE_outbox-relay"));
        for (name, value) in variables {
            _ = command.env(name, value);
        }
        let child = command
            .env("HABITAT_DATABASE_URL", &self.database_url)
            .env("HABITAT_OUTBOX_NAME", &self.name)
            .env("HABITAT_BOOTSTRAP_SERVERS", &kafka().bootstrap)
            .env("HABITAT_SCHEMA_REGISTRY_URL", &self.registry)
            .env("HABITAT_KAFKA_BROKER_ADDRESS_FAMILY", "v4")
            .env("HABITAT_OUTBOX_POLL_MS", "100")
            .env("HABITAT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log"))
            .spawn()
            .expect("start the relay");
        Relay(child)
    }

    /// Enqueues `count` member registrations for `tenant` in one transaction; commits or
    /// rolls back; returns the event ids in order.
    async fn transaction(
        pool: sqlx::PgPool,
        tenant: String,
        producer: usize,
        count: usize,
        commit: bool,
    ) -> Vec<String> {
        let mut tx = pool.begin().await.expect("begin");
        let mut ids = Vec::with_capacity(count);
        for i in 0..count {
            let payload = json!({"member_id": format!("m-{producer}-{i:04}"),
                                 "display_name": format!("Member {producer}.{i}"),
                                 "joined_on": "2026-01-15", "status": "ACTIVE"});
            let id: String = sqlx::query_scalar(
                "SELECT habitat_outbox.enqueue('people.MemberRegistered', $1, $2)::text",
            )
            .bind(&tenant)
            .bind(payload)
            .fetch_one(&mut *tx)
            .await
            .expect("enqueue");
            ids.push(id);
            if i % 16 == 0 {
                tokio::task::yield_now().await;
            }
        }
        if commit {
            tx.commit().await.expect("commit");
        } else {
            tx.rollback().await.expect("rollback");
        }
        ids
    }

    fn pending(&self) -> i64 {
        self.rt
            .block_on(outbox::status::status(
                &self.database_url,
                outbox::DEFAULT_SCHEMA,
            ))
            .expect("status")
            .pending
    }
}

struct Relay(Child);

impl Relay {
    fn is_running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }

    fn kill(&mut self) {
        _ = self.0.kill();
        _ = self.0.wait();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads the people topic (read_committed) and keeps the events of tenants with `prefix`.
struct Reader {
    consumer: BaseConsumer,
    prefix: String,
    /// (event id, tenant, member id, partition, offset).
    events: Vec<(String, String, String, i32, i64)>,
}

impl Reader {
    fn new(prefix: &str) -> Self {
        Self {
            consumer: committed_reader(PEOPLE, PARTITIONS),
            prefix: prefix.to_owned(),
            events: Vec::new(),
        }
    }

    fn poll(&mut self, codec: &AvroCodec) -> usize {
        while let Some(message) = self.consumer.poll(Duration::from_millis(50)) {
            let message = message.expect("consume");
            let Ok(Event::MemberRegistered(m)) =
                codec.decode(PEOPLE, message.payload().expect("a value"))
            else {
                continue;
            };
            if m.meta.tenant_id.starts_with(&self.prefix) {
                self.events.push((
                    m.meta.event_id.clone(),
                    m.meta.tenant_id.clone(),
                    m.member_id.clone(),
                    message.partition(),
                    message.offset(),
                ));
            }
        }
        self.events.len()
    }

    fn await_count(&mut self, codec: &AvroCodec, n: usize, what: &str) {
        wait_for(LONG, what, || (self.poll(codec) >= n).then_some(()));
    }
}

/// Each event id once, exactly `expected`, and within each producer transaction the members
/// in the order they were enqueued.
fn assert_exactly_once(events: &[(String, String, String, i32, i64)], expected: &HashSet<String>) {
    let mut seen = HashSet::new();
    for (id, ..) in events {
        assert!(seen.insert(id.clone()), "event {id} published twice");
    }
    assert_eq!(seen.len(), expected.len(), "published vs committed");
    assert!(
        seen == *expected,
        "the published events are not the committed ones"
    );
    let mut by_producer: BTreeMap<String, Vec<(i32, i64, String)>> = BTreeMap::new();
    for (_, _, member, partition, offset) in events {
        let producer = member
            .rsplit_once('-')
            .expect("m-<producer>-<i>")
            .0
            .to_owned();
        by_producer
            .entry(producer)
            .or_default()
            .push((*partition, *offset, member.clone()));
    }
    for (producer, mut members) in by_producer {
        members.sort();
        let partitions: HashSet<i32> = members.iter().map(|m| m.0).collect();
        assert_eq!(partitions.len(), 1, "{producer}: one tenant, one partition");
        let names: Vec<&String> = members.iter().map(|m| &m.2).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "{producer}: enqueued order kept");
    }
}

#[test]
fn committed_events_are_published_exactly_once_through_rollbacks_and_kills() {
    let setup = Setup::new();
    let prefix = unique("ob");
    let pool = setup
        .rt
        .block_on(
            PgPoolOptions::new()
                .max_connections(50)
                .connect(&setup.database_url),
        )
        .expect("producer pool");
    let mut relay = setup.relay("0");
    // 50 concurrent producer transactions of 200 events, every tenth rolled back.
    let handles: Vec<_> = (0..50)
        .map(|producer| {
            let tenant = format!("{prefix}-{}", producer % 5);
            setup.rt.spawn(Setup::transaction(
                pool.clone(),
                tenant,
                producer,
                200,
                producer % 10 != 3,
            ))
        })
        .collect();
    // SIGKILL the relay five times while the events flow, at random points: each time once
    // another 1,000 to 1,999 events are out.
    let mut reader = Reader::new(&prefix);
    let mut next = 0;
    for kill in 1..=5 {
        next += rand::random_range(1_000..2_000);
        reader.await_count(&setup.codec, next, "the relay to publish some");
        relay.kill();
        relay = setup.relay(&kill.to_string());
    }
    let mut committed = HashSet::new();
    let mut rolled_back = HashSet::new();
    for (producer, handle) in handles.into_iter().enumerate() {
        let ids = setup.rt.block_on(handle).expect("producer");
        if producer % 10 == 3 {
            rolled_back.extend(ids);
        } else {
            committed.extend(ids);
        }
    }
    assert_eq!((committed.len(), rolled_back.len()), (9_000, 1_000));
    reader.await_count(&setup.codec, 9_000, "every committed event");
    wait_for(LONG, "the outbox to empty", || {
        (setup.pending() == 0).then_some(())
    });
    // Nothing more comes: read to the end of every partition.
    let ends: Vec<i64> = (0..PARTITIONS)
        .map(|p| {
            reader
                .consumer
                .fetch_watermarks(PEOPLE, p, Duration::from_secs(10))
                .expect("watermarks")
                .1
        })
        .collect();
    wait_for(LONG, "the topic read to its end", || {
        reader.poll(&setup.codec);
        let position = reader.consumer.position().expect("position");
        (0..PARTITIONS)
            .all(|p| {
                let end = ends[usize::try_from(p).expect("small")];
                // An empty partition has no position to reach.
                end == 0
                    || position
                        .find_partition(PEOPLE, p)
                        .and_then(|e| e.offset().to_raw())
                        .is_some_and(|o| o >= end)
            })
            .then_some(())
    });
    assert!(
        reader
            .events
            .iter()
            .all(|(id, ..)| !rolled_back.contains(id))
    );
    assert_exactly_once(&reader.events, &committed);

    // …and they reach the sink.
    let sink_schema = unique("sink").replace('-', "_");
    let sink_db = test_support::database();
    let bin = devstack::process::sibling_binary("postgres-sink", "HABITAT_POSTGRES_SINK_BIN")
        .expect("the sink binary");
    let mut sink = Relay(
        Command::new(bin)
            .env("HABITAT_DATABASE_URL", &sink_db)
            .env("HABITAT_SINK_SCHEMA", &sink_schema)
            .env("HABITAT_GROUP_ID", unique("sink"))
            .env("HABITAT_BOOTSTRAP_SERVERS", &kafka().bootstrap)
            .env("HABITAT_SCHEMA_REGISTRY_URL", &setup.registry)
            .env("HABITAT_KAFKA_BROKER_ADDRESS_FAMILY", "v4")
            .env("HABITAT_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the sink"),
    );
    let sink_pool = setup
        .rt
        .block_on(PgPoolOptions::new().max_connections(1).connect(&sink_db))
        .expect("sink pool");
    wait_for(LONG, "the sink to hold every member", || {
        let count: i64 = setup
            .rt
            .block_on(
                sqlx::query_scalar(&format!(
                    "SELECT count(*) FROM {sink_schema}.members WHERE tenant_id LIKE $1"
                ))
                .bind(format!("{prefix}-%"))
                .fetch_one(&sink_pool),
            )
            .unwrap_or_default();
        (count == 9_000).then_some(())
    });
    sink.kill();
    drop(relay);
}

#[test]
fn two_relays_take_turns_and_a_refused_row_is_a_dead_letter() {
    let setup = Setup::new();
    let prefix = unique("two");
    let pool = setup
        .rt
        .block_on(
            PgPoolOptions::new()
                .max_connections(4)
                .connect(&setup.database_url),
        )
        .expect("pool");
    let mut first = setup.relay("a");
    let _second = setup.relay("b");
    let mut committed = HashSet::new();
    for producer in 0..5 {
        committed.extend(setup.rt.block_on(Setup::transaction(
            pool.clone(),
            format!("{prefix}-{producer}"),
            producer,
            200,
            true,
        )));
    }
    // Passes enqueue's cheap checks, not the REST proxy's rules: no display name.
    let bad: String = setup
        .rt
        .block_on(
            sqlx::query_scalar(
                "SELECT habitat_outbox.enqueue('people.MemberRegistered', $1, $2)::text",
            )
            .bind(format!("{prefix}-0"))
            .bind(json!({"member_id": "m-bad", "joined_on": "2026-01-15", "status": "ACTIVE"}))
            .fetch_one(&pool),
        )
        .expect("enqueued");
    // enqueue refuses at once what it can: a type producers may not write.
    let refused = setup.rt.block_on(
        sqlx::query("SELECT habitat_outbox.enqueue('treasury.TransactionPosted', 'coop-a', '{}')")
            .execute(&pool),
    );
    let message = refused.expect_err("refused").to_string();
    assert!(
        message.contains("not an event type producers may write"),
        "{message}"
    );

    let mut reader = Reader::new(&prefix);
    reader.await_count(&setup.codec, 1_000, "the events of both relays' outbox");
    wait_for(LONG, "the outbox to empty", || {
        (setup.pending() == 0).then_some(())
    });
    // The one that waits takes over when the one working dies.
    first.kill();
    for producer in 5..6 {
        committed.extend(setup.rt.block_on(Setup::transaction(
            pool.clone(),
            format!("{prefix}-{producer}"),
            producer,
            100,
            true,
        )));
    }
    reader.await_count(&setup.codec, 1_100, "the other relay to take over");
    wait_for(LONG, "the outbox to empty", || {
        (setup.pending() == 0).then_some(())
    });
    assert_exactly_once(&reader.events, &committed);

    let status = setup
        .rt
        .block_on(outbox::status::status(
            &setup.database_url,
            outbox::DEFAULT_SCHEMA,
        ))
        .expect("status");
    assert_eq!(status.dead_letters, 1);
    let (id, event_type, reason) = &status.recent_dead_letters[0];
    assert_eq!((id, event_type.as_str()), (&bad, "people.MemberRegistered"));
    assert_eq!(reason["error"], json!("invalid"));
    // The REST proxy's own words: the same problem a POST of this payload is answered with.
    assert_eq!(
        reason["problems"],
        json!([{"path": "payload", "problem": "missing field `display_name`"}])
    );
}

fn readyz(port: u16) -> String {
    devstack::process::http_get(port, "/readyz").unwrap_or_default()
}

#[test]
fn the_relay_waits_out_a_postgres_crash_then_gives_up_on_a_long_one() {
    use devstack::{postgres::throwaway_cluster, process::free_port};
    let dir = scratch_dir().join(unique("outbox-pg-outage"));
    let (cluster, _stop) = throwaway_cluster(&dir, "producer").expect("a Postgres of its own");
    let setup = Setup::on(cluster.url("producer"));
    let pool = setup
        .rt
        .block_on(
            PgPoolOptions::new()
                .max_connections(2)
                .connect(&setup.database_url),
        )
        .expect("producer pool");
    let prefix = unique("obo");
    let metrics = free_port().expect("port");
    let mut relay = setup.relay_with(
        "outage",
        &[("HABITAT_METRICS_LISTEN", format!("127.0.0.1:{metrics}"))],
    );
    let mut expected: HashSet<String> = setup
        .rt
        .block_on(Setup::transaction(
            pool.clone(),
            format!("{prefix}-0"),
            0,
            100,
            true,
        ))
        .into_iter()
        .collect();
    let mut reader = Reader::new(&prefix);
    reader.await_count(
        &setup.codec,
        100,
        "the relay to publish the first transaction",
    );

    // Postgres crashes: the relay stays up, not ready, and says why.
    cluster.stop_immediately().expect("crash Postgres");
    wait_for(LONG, "the relay to find the database unreachable", || {
        readyz(metrics)
            .starts_with("not ready: database unreachable")
            .then_some(())
    });
    assert!(
        relay.is_running(),
        "the relay exited while Postgres was down"
    );
    cluster.start().expect("restart Postgres");
    expected.extend(setup.rt.block_on(Setup::transaction(
        pool.clone(),
        format!("{prefix}-1"),
        1,
        100,
        true,
    )));
    reader.await_count(&setup.codec, 200, "the relay to publish after the outage");
    wait_for(LONG, "the relay ready again", || {
        readyz(metrics).starts_with("ready").then_some(())
    });
    // Nothing more arrives: every committed event once, none twice.
    assert_eq!(reader.poll(&setup.codec), 200);
    assert_exactly_once(&reader.events, &expected);
    relay.kill();

    // An outage longer than the give-up time: the relay exits, failing, and says why.
    let mut impatient = setup.relay_with("give-up", &[("HABITAT_GIVE_UP_SECONDS", "2".into())]);
    wait_for(LONG, "the second relay to take the lock", || {
        std::fs::read_to_string(setup.log("give-up"))
            .ok()?
            .contains("Outbox lock held")
            .then_some(())
    });
    cluster.stop_immediately().expect("crash Postgres again");
    let status = wait_for(LONG, "the relay to give up", || {
        impatient.0.try_wait().expect("wait")
    });
    assert!(!status.success(), "gave up is a failure: {status}");
    let log = std::fs::read_to_string(setup.log("give-up")).expect("log");
    assert!(log.contains("gave up after 2 s"), "{log}");
}
