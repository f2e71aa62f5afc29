//! The one retry policy of every long-running program: capped exponential backoff with
//! jitter, given up after a configurable time. What is retried is decided by the caller
//! (a transport error or a timeout is; a constraint violation or bad credentials are not).

use std::{fmt::Display, future::Future, time::Duration};

use backon::{BackoffBuilder, BlockingRetryable, ExponentialBuilder, Retryable};
use tracing::warn;

/// How long a program waits out an unreachable dependency before it gives up and exits
/// (`HABITAT_GIVE_UP_SECONDS`; its supervisor restarts it).
pub const DEFAULT_GIVE_UP: Duration = Duration::from_secs(900);

/// Backoff from `first` doubling to at most `max` between tries, each delay jittered,
/// until `give_up` has passed in waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub first: Duration,
    pub max: Duration,
    pub give_up: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::giving_up_after(DEFAULT_GIVE_UP)
    }
}

impl RetryPolicy {
    /// The standard backoff (100 ms doubling to 5 s) giving up after `give_up`.
    pub const fn giving_up_after(give_up: Duration) -> Self {
        Self {
            first: Duration::from_millis(100),
            max: Duration::from_secs(5),
            give_up,
        }
    }

    fn backoff(&self) -> impl BackoffBuilder + use<> {
        ExponentialBuilder::new()
            .with_min_delay(self.first)
            .with_max_delay(self.max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .with_total_delay(Some(self.give_up))
    }

    /// The delays between tries, for a caller that retries in its own loop; `None` once
    /// the give-up time is used up.
    pub fn delays(&self) -> Delays {
        Delays(Box::new(self.backoff().build()))
    }

    /// Calls `call` until it succeeds, fails with an error `transient` does not accept, or
    /// the give-up time has passed (the last error is returned). Each retry is logged.
    pub fn blocking<T, E: Display>(
        &self,
        what: &str,
        call: impl FnMut() -> Result<T, E>,
        transient: impl Fn(&E) -> bool,
    ) -> Result<T, E> {
        call.retry(self.backoff())
            .sleep(std::thread::sleep)
            .when(|error| transient(error))
            .notify(|error, delay| warn!(%error, ?delay, what, "Retrying."))
            .call()
    }

    /// [`RetryPolicy::blocking`] for async calls.
    pub async fn run<T, E: Display, Fut>(
        &self,
        what: &str,
        call: impl FnMut() -> Fut,
        transient: impl Fn(&E) -> bool,
    ) -> Result<T, E>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        call.retry(self.backoff())
            .sleep(tokio::time::sleep)
            .when(|error| transient(error))
            .notify(|error, delay| warn!(%error, ?delay, what, "Retrying."))
            .await
    }
}

/// Whether a database error means Postgres cannot be reached or is restarting (waited
/// out), rather than a statement it refuses (a constraint, a type, a permission: retrying
/// would fail again).
#[cfg(feature = "postgres")]
pub fn is_transient_database(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(error) => error.code().is_some_and(|code| {
            // Class 08: connection exception; 57P01-57P03: shutting down, crashed, not yet
            // accepting; 53300: too many connections; 40001/40P01: serialization, deadlock.
            code.starts_with("08")
                || matches!(
                    code.as_ref(),
                    "57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01"
                )
        }),
        _ => false,
    }
}

/// Whether a transient database error is among `error`'s causes.
#[cfg(feature = "postgres")]
pub fn has_transient_database_cause(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<sqlx::Error>()
            .is_some_and(is_transient_database)
    })
}

/// The successive delays of a [`RetryPolicy`].
pub struct Delays(Box<dyn Iterator<Item = Duration> + Send>);

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.0.next()
    }
}

impl std::fmt::Debug for Delays {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Delays")
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn quick(give_up: Duration) -> RetryPolicy {
        RetryPolicy {
            first: Duration::from_millis(1),
            max: Duration::from_millis(4),
            give_up,
        }
    }

    #[test]
    fn a_transient_error_is_retried_until_the_call_succeeds() {
        let calls = Cell::new(0);
        let result = quick(Duration::from_secs(5)).blocking(
            "a test call",
            || {
                calls.set(calls.get() + 1);
                if calls.get() < 4 {
                    Err("down")
                } else {
                    Ok(calls.get())
                }
            },
            |_| true,
        );
        assert_eq!(result, Ok(4));
    }

    #[test]
    fn an_error_that_is_not_transient_is_returned_at_once() {
        let calls = Cell::new(0);
        let result: Result<(), &str> = quick(Duration::from_secs(5)).blocking(
            "a test call",
            || {
                calls.set(calls.get() + 1);
                Err("constraint violated")
            },
            |error| *error != "constraint violated",
        );
        assert_eq!((result, calls.get()), (Err("constraint violated"), 1));
    }

    #[test]
    fn retrying_stops_after_the_give_up_time_with_the_last_error() {
        let calls = Cell::new(0);
        let result: Result<(), String> = quick(Duration::from_millis(30)).blocking(
            "a test call",
            || {
                calls.set(calls.get() + 1);
                Err(format!("down {}", calls.get()))
            },
            |_| true,
        );
        let tries = calls.get();
        assert!(tries > 2, "{tries} tries");
        assert_eq!(result, Err(format!("down {tries}")));
    }

    #[tokio::test]
    async fn async_calls_follow_the_same_policy() {
        let calls = std::sync::atomic::AtomicU32::new(0);
        let result = quick(Duration::from_secs(5))
            .run(
                "a test call",
                || async {
                    let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    if n < 3 { Err("down") } else { Ok(n) }
                },
                |_| true,
            )
            .await;
        assert_eq!(result, Ok(3));
    }
}
