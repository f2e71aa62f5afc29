//! When the sink writes its open batch, and how long its loop may wait for records
//! meanwhile: the batch settings of [`SinkConfig`] as one decision.
//!
//! A batch is written when it is full (`batch_max_records`) or old (`batch_interval_ms`),
//! whatever Postgres is doing. While Postgres is free (no write of the sink in flight) it is
//! also written once the input pauses (`batch_idle_ms`: the sink has caught up) or once it
//! has lingered `batch_linger_ms` under a steady stream. So under load the next batch grows
//! while one is written and batches size themselves to Postgres' pace, and a stream below
//! Postgres' pace waits at most the linger instead of the interval (docs/benchmarks.md:
//! p50 at half load 115 → 34 ms).

use std::time::Duration;

use crate::config::SinkConfig;

/// How often an open batch looks at its writes when `batch_idle_ms` is 0.
const IDLE_STEP: Duration = Duration::from_millis(5);

/// How long the loop waits for records when no batch is open.
const NOTHING_OPEN: Duration = Duration::from_millis(200);

/// The batch settings.
#[derive(Clone, Copy, Debug)]
pub struct Cadence {
    max: u64,
    interval: Duration,
    idle: Duration,
    linger: Duration,
}

/// The open batch as the loop sees it.
#[derive(Clone, Copy, Debug)]
pub struct Open {
    /// Records in it.
    pub records: u64,
    /// Since its first record was taken.
    pub age: Duration,
    /// Since the last record was taken.
    pub quiet: Duration,
    /// Whether a write of the sink is still in flight.
    pub writing: bool,
}

impl Cadence {
    pub fn of(config: &SinkConfig) -> Self {
        Self {
            max: config.batch_max_records as u64,
            interval: config.batch_interval(),
            idle: config.batch_idle(),
            linger: config.batch_linger(),
        }
    }

    /// Whether to write the open batch now (`None`: nothing is open).
    pub fn write_now(&self, open: Option<Open>) -> bool {
        let Some(open) = open.filter(|o| o.records > 0) else {
            return false;
        };
        if open.records >= self.max || open.age >= self.interval {
            return true;
        }
        let caught_up = !self.idle.is_zero() && open.quiet >= self.idle;
        let lingered = !self.linger.is_zero() && open.age >= self.linger;
        !open.writing && (caught_up || lingered)
    }

    /// How long the loop may wait for the next record before it decides again (`age`: of
    /// the open batch): until the batch falls due or lingers its time, and at least every
    /// `batch_idle_ms` (5 ms when 0) while a batch is open or a write is in flight, so that
    /// a write finishing is noticed — and its rows counted in the metrics — when it ends,
    /// not when the next record comes.
    pub fn wait(&self, age: Option<Duration>, writing: bool) -> Duration {
        let step = if self.idle.is_zero() {
            IDLE_STEP
        } else {
            self.idle
        };
        let Some(age) = age else {
            return if writing { step } else { NOTHING_OPEN };
        };
        let wait = self.interval.saturating_sub(age).min(step);
        match self.linger.checked_sub(age) {
            Some(left) if !left.is_zero() => wait.min(left),
            _ => wait,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn cadence() -> Cadence {
        Cadence::of(&SinkConfig::default())
    }

    fn open(records: u64, age: u64, quiet: u64, writing: bool) -> Option<Open> {
        Some(Open {
            records,
            age: ms(age),
            quiet: ms(quiet),
            writing,
        })
    }

    #[test]
    fn the_defaults() {
        let c = cadence();
        assert_eq!(
            (c.max, c.interval, c.idle, c.linger),
            (10_000, ms(100), ms(5), ms(20))
        );
    }

    #[test]
    fn full_or_old_batches_are_written_whatever_postgres_does() {
        let c = cadence();
        assert!(c.write_now(open(10_000, 1, 0, true)));
        assert!(c.write_now(open(3, 100, 0, true)));
        assert!(!c.write_now(open(9_999, 99, 0, true)));
        assert!(!c.write_now(None));
        assert!(!c.write_now(open(0, 500, 500, false)));
    }

    #[test]
    fn a_steady_stream_is_written_when_postgres_is_free_and_the_batch_has_lingered() {
        let c = cadence();
        // Records keep coming (quiet 0): Postgres free, written once 20 ms old.
        assert!(!c.write_now(open(300, 19, 0, false)));
        assert!(c.write_now(open(300, 20, 0, false)));
        // Postgres busy: the batch keeps growing until the write ends (or it is due).
        assert!(!c.write_now(open(300, 60, 0, true)));
    }

    #[test]
    fn a_caught_up_sink_writes_at_once_when_postgres_is_free() {
        let c = cadence();
        assert!(c.write_now(open(1, 5, 5, false)));
        assert!(!c.write_now(open(1, 5, 4, false)));
        assert!(!c.write_now(open(1, 50, 50, true)));
    }

    #[test]
    fn zero_turns_idle_and_linger_off() {
        let c = Cadence {
            idle: Duration::ZERO,
            linger: Duration::ZERO,
            ..cadence()
        };
        assert!(!c.write_now(open(300, 99, 99, false)));
        assert!(c.write_now(open(300, 100, 0, false)));
    }

    #[test]
    fn the_loop_waits_for_the_next_decision_and_never_spins() {
        let c = cadence();
        assert_eq!(c.wait(None, false), ms(200), "nothing to do");
        assert_eq!(c.wait(None, true), ms(5), "a write's end is noticed");
        assert_eq!(c.wait(Some(ms(0)), false), ms(5));
        assert_eq!(c.wait(Some(ms(17)), true), ms(3), "until the linger");
        assert_eq!(
            c.wait(Some(ms(30)), false),
            ms(5),
            "lingered: every idle step"
        );
        assert_eq!(c.wait(Some(ms(98)), true), ms(2), "until due");
        assert_eq!(
            c.wait(Some(ms(150)), false),
            Duration::ZERO,
            "due: decide now"
        );
        let off = Cadence {
            idle: Duration::ZERO,
            linger: Duration::ZERO,
            ..c
        };
        assert_eq!(off.wait(Some(ms(0)), false), ms(5));
        assert_eq!(off.wait(None, true), ms(5));
    }
}
