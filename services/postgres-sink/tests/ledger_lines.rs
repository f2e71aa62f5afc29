//! A ledger transaction's lines follow it: written with it, replaced when it is posted
//! again (in a later batch), deleted with it by its tombstone, and left alone when other
//! transactions are written.

mod common;

use common::{Coop, Written, claimed_store, write_batch};
use postgres_sink::store::Store;
use test_support::unique;

const TOPIC: &str = "habitat.treasury";

fn write(rt: &tokio::runtime::Runtime, store: &Store, next: i64, records: &[Written<'_>]) -> i64 {
    write_batch(rt, store, TOPIC, next, records)
}

#[test]
fn a_transactions_lines_are_replaced_with_it_and_deleted_with_it() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (store, schema) = claimed_store(&rt, "lines", TOPIC);
    let tenant = unique("coop");
    let mut coop = Coop::new(&tenant);
    let lines = |store: &Store| -> Vec<(String, i32, String, String, String)> {
        rt.block_on(
            sqlx::query_as(&format!(
                "SELECT transaction_id, line_no, account, debit::text, credit::text
                   FROM {schema}.ledger_lines WHERE tenant_id = $1
                  ORDER BY transaction_id, line_no"
            ))
            .bind(&tenant)
            .fetch_all(store.pool()),
        )
        .expect("lines")
    };
    let line = |id: &str, no: i32, account: &str, debit: &str, credit: &str| {
        (
            id.to_owned(),
            no,
            account.to_owned(),
            debit.to_owned(),
            credit.to_owned(),
        )
    };

    let first = coop.transaction("t-1", "m-1", "3900", "2300", "10.00");
    let second = coop.transaction("t-2", "m-1", "2300", "1010", "4.00");
    let mut next = write(
        &rt,
        &store,
        0,
        &[Written::Event(&first), Written::Event(&second)],
    );
    assert_eq!(
        lines(&store),
        vec![
            line("t-1", 1, "3900", "10.00", "0.00"),
            line("t-1", 2, "2300", "0.00", "10.00"),
            line("t-2", 1, "2300", "4.00", "0.00"),
            line("t-2", 2, "1010", "0.00", "4.00"),
        ]
    );

    // t-1 posted again with other accounts and amount, beside a new transaction: t-1's
    // old lines are gone, t-2's stay.
    let again = coop.transaction("t-1", "m-1", "3900", "3100", "7.50");
    let third = coop.transaction("t-3", "m-2", "1300", "1010", "1.25");
    next = write(
        &rt,
        &store,
        next,
        &[Written::Event(&again), Written::Event(&third)],
    );
    assert_eq!(
        lines(&store),
        vec![
            line("t-1", 1, "3900", "7.50", "0.00"),
            line("t-1", 2, "3100", "0.00", "7.50"),
            line("t-2", 1, "2300", "4.00", "0.00"),
            line("t-2", 2, "1010", "0.00", "4.00"),
            line("t-3", 1, "1300", "1.25", "0.00"),
            line("t-3", 2, "1010", "0.00", "1.25"),
        ]
    );

    // t-2's tombstone takes its row and its lines; then t-2 posted once more is whole.
    next = write(&rt, &store, next, &[Written::Tombstone(second.key())]);
    let remaining: Vec<String> = lines(&store).into_iter().map(|l| l.0).collect();
    assert_eq!(remaining, ["t-1", "t-1", "t-3", "t-3"]);
    let transactions: i64 = rt
        .block_on(
            sqlx::query_scalar(&format!(
                "SELECT count(*) FROM {schema}.ledger_transactions WHERE tenant_id = $1"
            ))
            .bind(&tenant)
            .fetch_one(store.pool()),
        )
        .expect("transactions");
    assert_eq!(transactions, 2);
    let back = coop.transaction("t-2", "m-1", "2300", "1010", "4.00");
    _ = write(&rt, &store, next, &[Written::Event(&back)]);
    let t2: Vec<_> = lines(&store).into_iter().filter(|l| l.0 == "t-2").collect();
    assert_eq!(
        t2,
        vec![
            line("t-2", 1, "2300", "4.00", "0.00"),
            line("t-2", 2, "1010", "0.00", "4.00"),
        ]
    );
}
