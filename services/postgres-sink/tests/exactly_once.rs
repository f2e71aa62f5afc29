//! Exactly once into Postgres: the sink SIGKILLed at random moments while 20,000 records
//! flow; afterwards every table holds exactly the latest record of each key and the event
//! log every record once. (Alone in its binary: the shared topics hold only its records.)

mod common;

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use common::{Coop, Post, Stack, post, tombstone};
use contracts::records::Event;
use test_support::{unique, wait_for};

const RECORDS: usize = 20_000;

/// A small deterministic generator (64-bit LCG).
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

/// What each key should hold at the end: the event id of its last record, or nothing.
type Expected = BTreeMap<String, Option<(&'static str, String)>>;

fn workload(tenants: &[String]) -> (Vec<Post>, Expected) {
    let mut rng = Rng(0x5eed);
    let mut coops: Vec<Coop> = tenants.iter().map(|t| Coop::new(t)).collect();
    let mut posts = Vec::with_capacity(RECORDS);
    let mut expected = Expected::new();
    let mut live: Vec<Event> = Vec::new();
    while posts.len() < RECORDS {
        let coop = &mut coops[rng.next(tenants.len() as u64) as usize];
        let roll = rng.next(20);
        let post = if roll == 19 && !live.is_empty() {
            let gone = live.swap_remove(rng.next(live.len() as u64) as usize);
            _ = expected.insert(gone.key(), None);
            tombstone(&gone)
        } else {
            let (event, table) = match roll {
                0..=6 => {
                    let id = format!("m-{}", rng.next(400));
                    (
                        coop.member(&id, &format!("Member {} v{}", id, posts.len())),
                        "members",
                    )
                }
                7..=13 => {
                    let id = format!("c-{}", rng.next(1500));
                    let value = format!("{}.{:02}", rng.next(5000), rng.next(100));
                    let member = format!("m-{}", rng.next(400));
                    (
                        coop.contribution(&id, &member, &value, rng.next(4) > 0),
                        "contributions",
                    )
                }
                _ => {
                    let id = format!("t-{}", rng.next(600));
                    let amount = format!("{}.{:02}", 1 + rng.next(900), rng.next(100));
                    let member = format!("m-{}", rng.next(400));
                    (
                        coop.transaction(&id, &member, "3900", "3100", &amount),
                        "ledger_transactions",
                    )
                }
            };
            _ = expected.insert(event.key(), Some((table, event.meta().event_id.clone())));
            live.push(event.clone());
            Post::Event(event)
        };
        posts.push(post);
    }
    (posts, expected)
}

#[test]
fn exactly_once_under_crashes() {
    let stack = Stack::new();
    let tenants: Vec<String> = (0..4).map(|i| unique(&format!("coop{i}"))).collect();
    let (posts, expected) = workload(&tenants);

    // The producer posts in slices while the sink is killed and restarted.
    let posted = Arc::new(AtomicUsize::new(0));
    let producer = {
        let posted = posted.clone();
        let registry = stack.registry.clone();
        std::thread::spawn(move || {
            let rt = end_to_end::runtime();
            let codec = habitat_runtime::avro::AvroCodec::new(&registry, rt.handle().clone())
                .expect("codec");
            for slice in posts.chunks(500) {
                post(&codec, slice);
                _ = posted.fetch_add(slice.len(), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(150));
            }
        })
    };

    let logged = || -> i64 {
        stack.query(sqlx::query_scalar("SELECT count(*) FROM event_log").fetch_one(&stack.pool))
    };
    let mut rng = Rng(42);
    let mut kills = Vec::new();
    let mut sink = stack.sink();
    for threshold in [1_500, 4_500, 7_500, 10_500, 13_500, 16_500] {
        wait_for(Duration::from_secs(180), "the sink to write more", || {
            (logged() >= threshold).then_some(())
        });
        std::thread::sleep(Duration::from_millis(rng.next(300)));
        drop(sink); // SIGKILL
        kills.push(logged());
        sink = stack.sink();
    }
    producer.join().expect("producer");
    stack.caught_up();
    drop(sink);

    let mid_stream = kills
        .iter()
        .filter(|n| **n > 0 && **n < RECORDS as i64)
        .count();
    assert!(mid_stream >= 5, "killed mid-stream at {kills:?}");

    // Every record exactly once in the log.
    let (rows, distinct): (i64, i64) = stack.query(
        sqlx::query_as(
            "SELECT count(*), count(DISTINCT (source_topic, source_partition, source_offset))
               FROM event_log",
        )
        .fetch_one(&stack.pool),
    );
    assert_eq!((rows, distinct), (RECORDS as i64, RECORDS as i64));

    // Every table holds exactly the last record of each key.
    for table in ["members", "contributions", "ledger_transactions"] {
        let found: BTreeMap<String, String> = stack
            .query(
                sqlx::query_as::<_, (String, String)>(&format!(
                    "SELECT record_key, event_id FROM {table} WHERE tenant_id = ANY($1)"
                ))
                .bind(&tenants)
                .fetch_all(&stack.pool),
            )
            .into_iter()
            .collect();
        let wanted: BTreeMap<String, String> = expected
            .iter()
            .filter_map(|(key, last)| match last {
                Some((t, id)) if *t == table => Some((key.clone(), id.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(found.len(), wanted.len(), "{table} rows");
        assert!(
            found == wanted,
            "{table}: rows differ from the last record of each key"
        );
    }

    // The lines of the live transactions, two each, balanced per tenant.
    let transactions = expected
        .values()
        .filter(|v| matches!(v, Some(("ledger_transactions", _))))
        .count() as i64;
    let (lines, unbalanced): (i64, i64) = stack.query(
        sqlx::query_as(
            "SELECT (SELECT count(*) FROM ledger_lines WHERE tenant_id = ANY($1)),
                    (SELECT count(*) FROM (SELECT tenant_id FROM ledger_lines
                       WHERE tenant_id = ANY($1) GROUP BY tenant_id
                      HAVING sum(debit) <> sum(credit)) u)",
        )
        .bind(&tenants)
        .fetch_one(&stack.pool),
    );
    assert_eq!((lines, unbalanced), (2 * transactions, 0));
    let dead: i64 =
        stack.query(sqlx::query_scalar("SELECT count(*) FROM dead_letters").fetch_one(&stack.pool));
    assert_eq!(dead, 0, "every record was decodable");
}
