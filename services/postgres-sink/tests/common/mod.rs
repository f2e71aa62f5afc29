//! Shared pieces of the sink's tests: the stack (devbroker, registry, a fresh database),
//! the sink as a process, records and tombstones posted to their tenant partitions.

#![allow(dead_code)]

use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use contracts::records::{
    ContributionApproved, ContributionKind, ContributionStatus, ContributionUnit, Event,
    LedgerLine, MemberRegistered, MemberStatus, TransactionPosted,
};
use contracts::topology::Topology;
use end_to_end::{PARTITIONS, Running};
use habitat_runtime::{Codec, avro::AvroCodec, partition_for};
use postgres_sink::store::options;
use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    producer::{BaseProducer, BaseRecord, Producer},
};
use sqlx::PgPool;
use test_support::{
    client_config, create_topic_blocking,
    records::{dec, meta},
    unique, wait_for,
};

/// A test's stack: the shared broker's topics, a registry, a database for the sink.
pub struct Stack {
    pub rt: tokio::runtime::Runtime,
    pub registry: String,
    pub codec: AvroCodec,
    pub database_url: String,
    pub group: String,
    pub pool: PgPool,
}

impl Stack {
    pub fn new() -> Self {
        Self::with_database(test_support::database())
    }

    /// A stack whose sink writes to `database_url` (a Postgres of the test's own).
    pub fn with_database(database_url: String) -> Self {
        let rt = end_to_end::runtime();
        let (registry, codec) = end_to_end::stack(&rt);
        let topology = Topology::embedded();
        for processor in &topology.processors {
            create_topic_blocking(&topology.dead_letter_topic(processor), PARTITIONS);
        }
        rt.block_on(postgres_sink::store::migrate(&database_url, "habitat"))
            .expect("migrate");
        let pool = rt
            .block_on(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(2)
                    .connect_with(options(&database_url, "habitat").expect("url")),
            )
            .expect("pool");
        Self {
            rt,
            registry,
            codec,
            database_url,
            group: unique("sink"),
            pool,
        }
    }

    /// The sink as a process on this stack.
    pub fn sink(&self) -> Running {
        self.sink_with(&[])
    }

    /// The sink with more settings.
    pub fn sink_with(&self, extra: &[(&str, String)]) -> Running {
        let mut env = vec![
            ("HABITAT_DATABASE_URL", self.database_url.clone()),
            ("HABITAT_GROUP_ID", self.group.clone()),
            ("HABITAT_SESSION_TIMEOUT_MS", "6000".to_owned()),
            ("HABITAT_LOG", "info".to_owned()),
        ];
        env.extend(extra.iter().cloned());
        Running::start("postgres-sink", &self.registry, &env)
    }

    /// Runs a database call on the stack's runtime; fails the test on an error.
    pub fn query<T, E: std::fmt::Display>(
        &self,
        f: impl std::future::Future<Output = Result<T, E>>,
    ) -> T {
        self.rt
            .block_on(f)
            .unwrap_or_else(|error| panic!("query: {error}"))
    }

    /// Waits until the sink's stored offsets reach the end of every context partition.
    pub fn caught_up(&self) {
        let consumer: BaseConsumer = client_config().create().expect("consumer");
        let mut ends = Vec::new();
        for topic in ["habitat.people", "habitat.treasury", "habitat.agreements"] {
            for partition in 0..PARTITIONS {
                let (_, high) = consumer
                    .fetch_watermarks(topic, partition, Duration::from_secs(10))
                    .expect("watermarks");
                ends.push((topic.to_owned(), partition, high));
            }
        }
        wait_for(Duration::from_secs(180), "the sink to catch up", || {
            let stored: Vec<(String, i32, i64)> = self.query::<_, sqlx::Error>(
                sqlx::query_as(
                    "SELECT topic, partition, next_offset FROM sink_offsets WHERE sink = $1",
                )
                .bind(&self.group)
                .fetch_all(&self.pool),
            );
            ends.iter()
                .all(|(topic, partition, high)| {
                    *high == 0
                        || stored
                            .iter()
                            .any(|(t, p, n)| t == topic && p == partition && n >= high)
                })
                .then_some(())
        });
    }
}

/// A record to post: an event, or a tombstone for a key of a topic.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // test data, built once
pub enum Post {
    Event(Event),
    Tombstone { topic: &'static str, key: String },
}

impl From<Event> for Post {
    fn from(event: Event) -> Self {
        Self::Event(event)
    }
}

/// Posts records in order, each to its tenant's partition.
pub fn post(codec: &AvroCodec, records: &[Post]) {
    let producer: BaseProducer = client_config()
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    for record in records {
        let (topic, key, value) = match record {
            Post::Event(event) => (
                event.topic(),
                event.key(),
                Some(codec.encode(event.topic(), event).expect("encode")),
            ),
            Post::Tombstone { topic, key } => (*topic, key.clone(), None),
        };
        let mut out = BaseRecord::to(topic)
            .key(key.as_str())
            .partition(partition_for(&key, PARTITIONS));
        if let Some(value) = &value {
            out = out.payload(value.as_slice());
        }
        loop {
            match producer.send(out) {
                Ok(()) => break,
                Err((error, back)) => {
                    assert!(
                        matches!(
                            error,
                            rdkafka::error::KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull
                            )
                        ),
                        "send: {error}"
                    );
                    producer.poll(Duration::from_millis(10));
                    out = back;
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(60)).expect("delivered");
}

/// Builds records of one tenant with fresh event ids.
pub struct Coop {
    pub tenant: String,
    pub at: DateTime<Utc>,
}

impl Coop {
    pub fn new(tenant: &str) -> Self {
        Self {
            tenant: tenant.to_owned(),
            at: "2026-03-01T12:00:00Z".parse().expect("time"),
        }
    }

    pub fn meta(&mut self, event_type: &str) -> contracts::records::Meta {
        self.at += TimeDelta::seconds(1);
        meta(
            &self.tenant,
            event_type,
            &uuid::Uuid::now_v7().to_string(),
            self.at,
        )
    }

    pub fn member(&mut self, id: &str, name: &str) -> Event {
        MemberRegistered {
            meta: self.meta("people.MemberRegistered"),
            member_id: id.to_owned(),
            display_name: name.to_owned(),
            joined_on: NaiveDate::from_ymd_opt(2025, 1, 15).expect("date"),
            status: MemberStatus::Active,
            email: Some(format!("{id}@example.coop")),
        }
        .into()
    }

    pub fn contribution(&mut self, id: &str, member: &str, value: &str, approved: bool) -> Event {
        let c = ContributionApproved {
            meta: self.meta("people.ContributionApproved"),
            contribution_id: id.to_owned(),
            member_id: member.to_owned(),
            period_id: "2026".to_owned(),
            kind: ContributionKind::Labor,
            quantity: dec("10.0000"),
            unit: ContributionUnit::Hours,
            value: dec(value),
            description: "work".to_owned(),
            status: ContributionStatus::Approved,
            submitted_by: format!("member:{member}"),
            submitted_at: self.at,
            reviewed_by: Some("steward:ana".to_owned()),
            reviewed_at: Some(self.at),
            rejection_reason: None,
        };
        if approved {
            c.into()
        } else {
            let mut r = test_support::records::rejected(c, "not patronage");
            r.status = ContributionStatus::Rejected;
            r.into()
        }
    }

    /// A balanced transaction: Dr `debit` / Cr `credit` of `amount`, for `member`.
    pub fn transaction(
        &mut self,
        id: &str,
        member: &str,
        debit: &str,
        credit: &str,
        amount: &str,
    ) -> Event {
        let line = |account: &str, debit: &str, credit: &str| LedgerLine {
            account: account.to_owned(),
            member_id: Some(member.to_owned()),
            debit: dec(debit),
            credit: dec(credit),
            memo: format!("{id} {account}"),
        };
        TransactionPosted {
            meta: self.meta("treasury.TransactionPosted"),
            transaction_id: id.to_owned(),
            posted_on: self.at.date_naive(),
            currency: "USD".to_owned(),
            description: format!("transaction {id}"),
            source_event_id: uuid::Uuid::now_v7().to_string(),
            lines: vec![line(debit, amount, "0.00"), line(credit, "0.00", amount)],
        }
        .into()
    }
}

/// The tombstone of an event's key.
pub fn tombstone(event: &Event) -> Post {
    Post::Tombstone {
        topic: event.topic(),
        key: event.key(),
    }
}

/// Client settings for the test broker (IPv4 loopback).
pub fn kafka_settings() -> habitat_runtime::config::KafkaSettings {
    let mut settings = habitat_runtime::config::KafkaSettings::default();
    _ = settings
        .0
        .insert("broker.address.family".to_owned(), "v4".to_owned());
    settings
}

/// Replay-to-verify of the stack's sink, run outside the stack's runtime.
pub fn verify(stack: &Stack) -> postgres_sink::verify::Verification {
    let handle = stack.rt.handle().clone();
    let source = postgres_sink::verify::Source {
        bootstrap_servers: test_support::kafka().bootstrap.clone(),
        schema_registry_url: stack.registry.clone(),
        schema_registry_auth: None,
        kafka: kafka_settings(),
    };
    let url = stack.database_url.clone();
    let group = stack.group.clone();
    std::thread::spawn(move || {
        postgres_sink::verify::replay(
            &url,
            "habitat",
            &group,
            &source,
            false,
            &handle,
            &mut |_, _| {},
        )
    })
    .join()
    .expect("verify thread")
    .expect("verify")
}

/// A record of a batch written straight through a [`postgres_sink::store::Store`]: an
/// event, or the tombstone of a key.
pub enum Written<'a> {
    Event(&'a Event),
    Tombstone(String),
}

/// Writes `records` as one batch read from partition 0 of `topic` at `next` (the first
/// batch at 0), the way the sink writes a batch; returns the new next offset.
/// A store on a fresh schema of a fresh database (one writer: its batches go through the
/// same few sessions, one after the other), owning partition 0 of `topic`; and the schema.
pub fn claimed_store(
    rt: &tokio::runtime::Runtime,
    name: &str,
    topic: &str,
) -> (postgres_sink::store::Store, String) {
    let url = test_support::database();
    let schema = test_support::unique(name).replace('-', "_");
    let store = rt
        .block_on(postgres_sink::store::Store::connect_for(
            &url,
            &schema,
            &format!("{name}-test"),
            1,
        ))
        .expect("store");
    rt.block_on(store.claim(&[(topic.to_owned(), 0)]))
        .expect("claim");
    (store, schema)
}

pub fn write_batch(
    rt: &tokio::runtime::Runtime,
    store: &postgres_sink::store::Store,
    topic: &'static str,
    next: i64,
    records: &[Written<'_>],
) -> i64 {
    use postgres_sink::batch::{Batch, Coordinates};
    let mut batch = Batch::default();
    for (i, record) in records.iter().enumerate() {
        let at = Coordinates {
            topic,
            partition: 0,
            offset: next + i as i64,
        };
        match record {
            Written::Event(event) => batch.event(at, None, event),
            Written::Tombstone(key) => batch.tombstone(at, key),
        }
    }
    let expected = std::collections::BTreeMap::from([(
        (topic.to_owned(), 0),
        if next == 0 { -1 } else { next },
    )]);
    let prepared = store.prepare(batch).expect("rows the sink made");
    rt.block_on(store.write(&prepared, &expected))
        .expect("the batch is written");
    next + records.len() as i64
}
