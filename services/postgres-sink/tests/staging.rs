//! The staging tables a batch's entity rows pass through are emptied by the transaction
//! that filled them: a later batch on the same session merges only its own rows, and a
//! table grown past 1 MiB is truncated rather than left to bloat (nothing vacuums a
//! temporary table).

mod common;

use common::{Coop, Written, claimed_store, write_batch};
use postgres_sink::store::Store;
use test_support::unique;

const TOPIC: &str = "habitat.people";

/// Writes `events` as one batch read from partition 0 after `next`; returns the new next.
fn write(
    rt: &tokio::runtime::Runtime,
    store: &Store,
    next: i64,
    events: &[contracts::records::Event],
) -> i64 {
    let records: Vec<Written<'_>> = events.iter().map(Written::Event).collect();
    write_batch(rt, store, TOPIC, next, &records)
}

#[test]
fn each_batch_merges_only_its_own_staged_rows_and_a_grown_staging_table_is_truncated() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // One writer: every batch goes through the same few sessions, one after the other.
    let (store, schema) = claimed_store(&rt, "staging", TOPIC);
    let tenant = unique("coop");
    let mut coop = Coop::new(&tenant);

    // Twelve batches, each a new value of one of three contributions. A batch that found
    // an earlier batch's rows still staged would merge them again: refused when it stages
    // the same key (one merge cannot touch a row twice), or an old value written back.
    let mut next = 0;
    for i in 0..12 {
        let value = format!("{}.00", 100 + i);
        let event = coop.contribution(&format!("c-{}", i % 3), "m-1", &value, true);
        next = write(&rt, &store, next, &[event]);
    }
    let values: Vec<(String, String)> = rt
        .block_on(
            sqlx::query_as(&format!(
                "SELECT contribution_id, value::text FROM {schema}.contributions
                  WHERE tenant_id = $1 ORDER BY contribution_id"
            ))
            .bind(&tenant)
            .fetch_all(store.pool()),
        )
        .expect("contributions");
    let expected: Vec<(String, String)> = [("c-0", "109.00"), ("c-1", "110.00"), ("c-2", "111.00")]
        .map(|(id, value)| (id.to_owned(), value.to_owned()))
        .into();
    assert_eq!(values, expected);

    // A batch of 4,000 contributions (~2 MiB staged), then small ones: the large one's
    // table is truncated, so no session's staging table holds more than 1 MiB after.
    let large: Vec<_> = (0..4_000)
        .map(|n| coop.contribution(&format!("big-{n}"), "m-2", "1.00", true))
        .collect();
    next = write(&rt, &store, next, &large);
    for i in 0..5 {
        let event = coop.contribution(&format!("small-{i}"), "m-3", "2.00", true);
        next = write(&rt, &store, next, &[event]);
    }
    let sizes: Vec<i64> = rt
        .block_on(
            sqlx::query_scalar(
                "SELECT pg_relation_size(c.oid) FROM pg_class c
                  WHERE c.relname = 'stage_contributions' AND c.relpersistence = 't'",
            )
            .fetch_all(store.pool()),
        )
        .expect("staging sizes");
    assert!(!sizes.is_empty(), "the sessions' staging tables are listed");
    assert!(
        sizes.iter().all(|size| *size <= 1 << 20),
        "a staging table kept more than 1 MiB: {sizes:?}"
    );
    let (rows, offset): (i64, i64) = rt
        .block_on(
            sqlx::query_as(&format!(
                "SELECT (SELECT count(*) FROM {schema}.contributions WHERE tenant_id = $1),
                        (SELECT next_offset FROM {schema}.sink_offsets WHERE sink = 'staging-test')"
            ))
            .bind(&tenant)
            .fetch_one(store.pool()),
        )
        .expect("counts");
    assert_eq!((rows, offset), (3 + 4_000 + 5, next));
}
