//! A tombstone deletes its row, and replay-to-verify finds no difference on a healthy
//! database and reports a row altered behind the sink's back. (One test per binary: the
//! binary's broker and topics are its own, and so are the registry's schema ids.)

mod common;

use common::{Coop, Stack, post, tombstone, verify};
use contracts::records::Event;
use test_support::unique;

#[test]
fn a_tombstone_deletes_and_replay_finds_no_difference_until_a_row_is_altered() {
    let stack = Stack::new();
    let tenant = unique("coop");
    let mut coop = Coop::new(&tenant);
    let mut ana = coop.member("m-1", "Ana");
    // Every meta field reaches its log column as it was: the time to the microsecond, an
    // absent actor as NULL.
    if let Event::MemberRegistered(m) = &mut ana {
        m.meta.occurred_at += chrono::TimeDelta::microseconds(123_457);
        m.meta.actor = None;
        m.meta.causation_id = Some("cause-1".to_owned());
    }
    let ben = coop.member("m-2", "Ben");
    let work = coop.contribution("c-1", "m-1", "120.50", true);
    let posting = coop.transaction("t-1", "m-1", "3900", "3100", "75.25");
    post(
        &stack.codec,
        &[
            ana.clone().into(),
            ben.clone().into(),
            work.into(),
            posting.into(),
            tombstone(&ben),
        ],
    );
    let sink = stack.sink();
    stack.caught_up();

    let members: Vec<(String, String)> = stack.query(
        sqlx::query_as("SELECT member_id, display_name FROM members WHERE tenant_id = $1")
            .bind(&tenant)
            .fetch_all(&stack.pool),
    );
    assert_eq!(members, vec![("m-1".to_owned(), "Ana".to_owned())]);
    let (value, lines): (String, i64) = stack.query(
        sqlx::query_as(
            "SELECT (SELECT value::text FROM contributions WHERE tenant_id = $1),
                    (SELECT count(*) FROM ledger_lines WHERE tenant_id = $1 AND debit + credit = 75.25)",
        )
        .bind(&tenant)
        .fetch_one(&stack.pool),
    );
    assert_eq!((value.as_str(), lines), ("120.50", 2));
    let logged: Vec<(Option<String>, bool)> = stack.query(
        sqlx::query_as(
            "SELECT event_type, payload IS NULL FROM event_log WHERE tenant_id = $1
              ORDER BY source_topic, source_offset",
        )
        .bind(&tenant)
        .fetch_all(&stack.pool),
    );
    assert_eq!(logged.len(), 5);
    assert_eq!(
        logged
            .iter()
            .filter(|(t, gone)| t.is_none() && *gone)
            .count(),
        1,
        "{logged:?}"
    );

    let meta = ana.meta();
    type LogRow = (
        String,
        Option<String>,
        Option<chrono::DateTime<chrono::Utc>>,
        Option<i32>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let row: LogRow = stack.query(
        sqlx::query_as(
            "SELECT record_key, event_id, occurred_at, schema_version, producer, actor,
                    correlation_id, causation_id, payload->>'display_name'
               FROM event_log WHERE tenant_id = $1 AND event_type = 'people.MemberRegistered'
                AND payload->>'member_id' = 'm-1'",
        )
        .bind(&tenant)
        .fetch_one(&stack.pool),
    );
    assert_eq!(
        row,
        (
            ana_key(&ana),
            Some(meta.event_id.clone()),
            Some(meta.occurred_at),
            Some(meta.schema_version),
            Some(meta.producer.clone()),
            None,
            Some(meta.correlation_id.clone()),
            Some("cause-1".to_owned()),
            Some("Ana".to_owned()),
        )
    );

    let clean = verify(&stack);
    assert!(clean.is_clean(), "{}", clean.render());
    assert!(clean.records_replayed >= 5);
    assert!(clean.rows["members"] >= 1 && clean.rows["event_log"] >= 5);

    _ = stack.query(
        sqlx::query("UPDATE members SET display_name = 'Mallory' WHERE record_key = $1")
            .bind(ana_key(&ana))
            .execute(&stack.pool),
    );
    let altered = verify(&stack);
    assert!(!altered.is_clean());
    assert_eq!(altered.counts["members"], 1, "{}", altered.render());
    let difference = &altered.differences[0];
    assert_eq!(
        (
            difference.table.as_str(),
            difference.key.as_str(),
            difference.kind.as_str()
        ),
        ("members", ana_key(&ana).as_str(), "differs")
    );
    assert_eq!(
        difference.columns["display_name"],
        ("Mallory".into(), "Ana".into())
    );
    assert!(
        altered
            .render()
            .contains("display_name: live \"Mallory\" / replay \"Ana\"")
    );
    drop(sink);
}

fn ana_key(event: &Event) -> String {
    event.key()
}
