//! The books' invariants over the sink's tables: the scenario's books hold; a ledger line
//! edited in place is named by the view and counted by the sink's gauge.

use super::*;

#[test]
fn a_ledger_line_edited_in_place_is_a_break_the_sink_counts() {
    let stack = Stack::new();
    let tenant = unique("coop");
    post(&stack.codec, &scenario(&tenant));
    let port = devstack::process::free_port().expect("a port");
    let _sink = stack.sink_with(&[
        ("HABITAT_BOOKS_CHECK_SECONDS", "1".to_owned()),
        ("HABITAT_METRICS_LISTEN", format!("127.0.0.1:{port}")),
    ]);
    stack.caught_up();
    let breaks = |stack: &Stack| -> Vec<(String, String)> {
        stack.query(
            sqlx::query_as(
                "SELECT invariant, subject FROM invariant_breaks_all WHERE tenant_id = $1
                  ORDER BY invariant, subject",
            )
            .bind(&tenant)
            .fetch_all(&stack.pool),
        )
    };
    assert_eq!(breaks(&stack), vec![]);

    stack.query(
        sqlx::query(
            "UPDATE ledger_lines SET debit = debit + 0.01
              WHERE tenant_id = $1 AND account = '3900'",
        )
        .bind(&tenant)
        .execute(&stack.pool),
    );
    let found = breaks(&stack);
    assert!(
        found.contains(&("TRIAL_BALANCE".to_owned(), "USD".to_owned())),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|(invariant, _)| invariant == "POSTING_BALANCES"),
        "{found:?}"
    );
    // The sink counts breaks of every tenant of its schema.
    wait_for_gauge(port, "TRIAL_BALANCE");
}

fn wait_for_gauge(port: u16, invariant: &str) {
    test_support::wait_for(
        std::time::Duration::from_secs(60),
        "the sink to count the break",
        || {
            let body = devstack::process::http_get(port, "/metrics")?;
            let count = devstack::process::metric_value(
                &body,
                postgres_sink::books::BOOKS_BREAKS,
                &[("invariant", invariant)],
            )?;
            (count >= 1.0).then_some(())
        },
    );
}
