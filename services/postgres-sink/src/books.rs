//! The books watched live: every `books_check_seconds` the sink counts the rows of its
//! schema's `invariant_breaks_all` view by invariant into `habitat_books_breaks`, which an
//! alert watches (a break that lasts is a real one; a posting on its way clears by itself).

use std::time::Duration;

use habitat_runtime::metrics::Metrics;
use prometheus::{IntGaugeVec, Opts};
use sqlx::PgPool;
use tokio::runtime::Handle;
use tracing::warn;

use crate::tables::ident;

/// The gauge's name.
pub const BOOKS_BREAKS: &str = "habitat_books_breaks";

/// Every invariant of the view, so each has a series (0 while it holds).
pub const INVARIANTS: &[&str] = &[
    "TRIAL_BALANCE",
    "POSTING_BALANCES",
    "ALLOCATIONS_ADD_UP",
    "CASH_AT_LEAST_RATIO",
    "CAPITAL_EQUALS_LEDGER",
    "PAYABLE_NOT_NEGATIVE",
    "PAYMENTS_WITHIN_CASH",
    "APPROVED_POSTED_ONCE",
];

/// Registers the gauge and counts the breaks every `every` on `handle`; `every` zero: off.
pub fn watch(handle: &Handle, pool: PgPool, schema: &str, metrics: &Metrics, every: Duration) {
    if every.is_zero() {
        return;
    }
    let gauge = IntGaugeVec::new(
        Opts::new(
            BOOKS_BREAKS,
            "Breaks of the books' invariants in the sink's tables, by invariant (the invariant_breaks view).",
        ),
        &["invariant"],
    )
    .expect("a valid metric");
    metrics.register(Box::new(gauge.clone()));
    let sql = format!(
        "SELECT invariant, count(*) FROM {}.invariant_breaks_all GROUP BY invariant",
        ident(schema)
    );
    _ = handle.spawn(async move {
        let mut ticks = tokio::time::interval(every);
        loop {
            _ = ticks.tick().await;
            match sqlx::query_as::<_, (String, i64)>(&sql)
                .fetch_all(&pool)
                .await
            {
                Ok(counts) => {
                    for invariant in INVARIANTS {
                        gauge.with_label_values(&[invariant]).set(0);
                    }
                    for (invariant, count) in counts {
                        gauge.with_label_values(&[invariant.as_str()]).set(count);
                    }
                }
                Err(error) => warn!(%error, "The books could not be checked."),
            }
        }
    });
}
