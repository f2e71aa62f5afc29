//! The books watched live: every `books_check_seconds` the sink counts the rows of its
//! schema's `invariant_breaks_all` view by invariant into `habitat_books_breaks`, which an
//! alert watches (a break that lasts is a real one; a posting on its way clears by itself),
//! and the last check's duration into `habitat_books_check_seconds`. A check reads all the
//! books, so the checks are spaced out once one takes more than 1 % of the interval.

use std::time::{Duration, Instant};

use habitat_runtime::metrics::Metrics;
use prometheus::{Gauge, IntGaugeVec, Opts};
use sqlx::PgPool;
use tokio::runtime::Handle;
use tracing::{debug, warn};

use crate::tables::ident;

/// The name of the gauge of breaks by invariant.
pub const BOOKS_BREAKS: &str = "habitat_books_breaks";
/// The name of the gauge of the last check's duration.
pub const BOOKS_CHECK_SECONDS: &str = "habitat_books_check_seconds";

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

/// The check: the breaks of the books in `schema`, counted by invariant (no row while
/// every invariant holds). It reads every row of the books, so its cost follows their size.
pub fn breaks_by_invariant(schema: &str) -> String {
    format!(
        "SELECT invariant, count(*) FROM {}.invariant_breaks_all GROUP BY invariant",
        ident(schema)
    )
}

/// The share of its time the watch may spend checking: after a check that took `t`, the
/// next starts no sooner than `t / CHECK_SHARE`. The check reads all the books, so it
/// grows with them (on the bench's 50 cooperatives, 0.07 s after one year and 1.5 s after
/// thirty); this keeps it to 1 % of a backend however long the history, at the price of
/// checking less often than `every` once a check takes longer than `every / 100`.
const CHECK_SHARE: f64 = 0.01;

/// The wait before the next check, after one that took `took`.
fn next_check(every: Duration, took: Duration) -> Duration {
    every.max(took.div_f64(CHECK_SHARE))
}

/// Registers the gauges and counts the breaks every `every` (or less often, by
/// `CHECK_SHARE`) on `handle`; `every` zero: off.
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
    let took_gauge = Gauge::new(
        BOOKS_CHECK_SECONDS,
        "How long the last check of the books took (it reads them all; the checks are spaced to keep it to 1 % of the time).",
    )
    .expect("a valid metric");
    metrics.register(Box::new(took_gauge.clone()));
    let sql = breaks_by_invariant(schema);
    _ = handle.spawn(async move {
        loop {
            let started = Instant::now();
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
            let took = started.elapsed();
            took_gauge.set(took.as_secs_f64());
            let wait = next_check(every, took);
            if wait > every {
                debug!(
                    took_seconds = took.as_secs_f64(),
                    next_in_seconds = wait.as_secs_f64(),
                    "The books' check spaced out: it took longer than 1 % of its interval."
                );
            }
            tokio::time::sleep(wait).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_keep_their_interval_until_one_takes_more_than_a_hundredth_of_it() {
        let every = Duration::from_secs(300);
        assert_eq!(next_check(every, Duration::from_millis(70)), every);
        assert_eq!(next_check(every, Duration::from_secs(3)), every);
        assert_eq!(
            next_check(every, Duration::from_secs(5)),
            Duration::from_secs(500)
        );
    }
}
