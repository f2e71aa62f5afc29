//! Replay-to-verify on compacted topics: after the broker cleaned the context topics, the
//! tables rebuilt from what is left equal the live ones (`event_log` compared in the
//! direction that holds), and a row altered behind the sink's back is still found.

mod common;

use common::{Coop, Stack, post, tombstone, verify};
use end_to_end::PARTITIONS;
use test_support::{
    compaction::{await_compacted, clean_eagerly, records_on},
    unique,
};

const CONTEXTS: [&str; 3] = ["habitat.people", "habitat.treasury", "habitat.agreements"];

#[test]
fn replay_on_cleaned_topics_is_clean_and_still_finds_an_altered_row() {
    let stack = Stack::new();
    let tenant = unique("coop");
    let mut coop = Coop::new(&tenant);
    let first = coop.member("m-1", "Ana");
    let renamed = coop.member("m-1", "Ana Maria");
    let ben = coop.member("m-2", "Ben");
    let work = coop.contribution("c-1", "m-1", "120.50", true);
    let work_again = coop.contribution("c-1", "m-1", "130.00", true);
    let posting = coop.transaction("t-1", "m-1", "3900", "3100", "75.25");
    post(
        &stack.codec,
        &[
            first.clone().into(),
            renamed.clone().into(),
            ben.clone().into(),
            work.into(),
            work_again.into(),
            posting.into(),
            tombstone(&ben),
        ],
    );
    let sink = stack.sink();
    stack.caught_up();
    let logged: i64 = stack.query(
        sqlx::query_scalar("SELECT count(*) FROM event_log WHERE tenant_id = $1")
            .bind(&tenant)
            .fetch_one(&stack.pool),
    );
    assert_eq!(logged, 7);

    clean_eagerly(&CONTEXTS);
    await_compacted(&CONTEXTS, PARTITIONS);
    let people = records_on("habitat.people", PARTITIONS);
    assert!(
        people.iter().all(|r| r.key != ben.key()),
        "Ben's record and tombstone are cleaned away"
    );
    assert_eq!(
        people.iter().filter(|r| r.key == first.key()).count(),
        1,
        "one record left for Ana's key"
    );

    let clean = verify(&stack);
    assert!(clean.is_clean(), "{}", clean.render());
    // Ana's first registration, Ben's registration and tombstone, the first contribution.
    assert_eq!(clean.compacted, 4, "{}", clean.render());
    assert!(clean.render().contains("compacted off the topics"));
    let names: Vec<String> = stack.query(
        sqlx::query_scalar("SELECT display_name FROM members WHERE tenant_id = $1")
            .bind(&tenant)
            .fetch_all(&stack.pool),
    );
    assert_eq!(names, ["Ana Maria"]);

    // Altered behind the sink's back: an entity row, and a log row still on its topic.
    _ = stack.query(
        sqlx::query("UPDATE contributions SET value = 1000 WHERE tenant_id = $1")
            .bind(&tenant)
            .execute(&stack.pool),
    );
    _ = stack.query(
        sqlx::query(
            "UPDATE event_log SET payload = jsonb_set(payload::jsonb, '{display_name}', '\"Mallory\"')::json
              WHERE record_key = $1 AND payload->>'display_name' = 'Ana Maria'",
        )
        .bind(renamed.key())
        .execute(&stack.pool),
    );
    let altered = verify(&stack);
    assert_eq!(altered.counts["contributions"], 1, "{}", altered.render());
    assert_eq!(altered.counts["event_log"], 1, "{}", altered.render());
    let logged = altered
        .differences
        .iter()
        .find(|d| d.table == "event_log")
        .expect("the event_log difference");
    assert_eq!(logged.kind, "differs");

    // A log row deleted while its record is still on the topic is missing.
    _ = stack.query(
        sqlx::query(
            "DELETE FROM event_log WHERE record_key = $1 AND payload->>'display_name' = 'Mallory'",
        )
        .bind(renamed.key())
        .execute(&stack.pool),
    );
    let deleted = verify(&stack);
    assert!(
        deleted
            .differences
            .iter()
            .any(|d| d.table == "event_log" && d.kind == "missing in live"),
        "{}",
        deleted.render()
    );
    drop(sink);
}
