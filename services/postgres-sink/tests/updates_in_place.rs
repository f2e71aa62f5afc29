//! A contribution reviewed after it was submitted is updated where it lies: its table
//! leaves room on each page (migration 0011), so the new version goes on the same page
//! (a heap-only update, no new index entries) instead of moving to another.

mod common;

use common::{Coop, Written, claimed_store, write_batch};
use postgres_sink::store::Store;
use test_support::unique;

const TOPIC: &str = "habitat.people";

#[test]
fn reviewed_contributions_stay_on_their_pages() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (store, schema) = claimed_store(&rt, "in_place", TOPIC);
    let tenant = unique("coop");
    let mut coop = Coop::new(&tenant);
    let pages = |store: &Store| -> Vec<(String, String, i64)> {
        rt.block_on(
            sqlx::query_as(&format!(
                "SELECT record_key, status, (ctid::text::point)[0]::bigint
                   FROM {schema}.contributions WHERE tenant_id = $1 ORDER BY record_key"
            ))
            .bind(&tenant)
            .fetch_all(store.pool()),
        )
        .expect("rows")
    };

    // Enough rows to fill several pages, refused first and then approved.
    let ids: Vec<String> = (0..300).map(|i| format!("c-{i:03}")).collect();
    let refused: Vec<_> = ids
        .iter()
        .map(|id| coop.contribution(id, "m-1", "10.00", false))
        .collect();
    let written: Vec<Written<'_>> = refused.iter().map(Written::Event).collect();
    let next = write_batch(&rt, &store, TOPIC, 0, &written);
    let before = pages(&store);
    assert_eq!(before.len(), 300);
    assert!(before.iter().all(|(_, status, _)| status == "REJECTED"));
    assert!(
        before
            .iter()
            .map(|(_, _, page)| *page)
            .max()
            .unwrap_or_default()
            >= 3,
        "the rows fill several pages: {before:?}"
    );

    let approved: Vec<_> = ids
        .iter()
        .map(|id| coop.contribution(id, "m-1", "12.00", true))
        .collect();
    let written: Vec<Written<'_>> = approved.iter().map(Written::Event).collect();
    _ = write_batch(&rt, &store, TOPIC, next, &written);
    let after = pages(&store);
    assert!(after.iter().all(|(_, status, _)| status == "APPROVED"));
    let moved: Vec<_> = before
        .iter()
        .zip(&after)
        .filter(|((_, _, a), (_, _, b))| a != b)
        .map(|((key, _, a), (_, _, b))| format!("{key}: page {a} -> {b}"))
        .collect();
    assert!(moved.is_empty(), "rows moved to other pages: {moved:?}");
}
