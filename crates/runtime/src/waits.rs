//! Waiting on rdkafka without spinning.
//!
//! rust-rdkafka's `poll(timeout)` (producer and consumer) keeps polling until its deadline
//! and hands librdkafka the time left in whole milliseconds: with less than a millisecond
//! left it polls with a zero timeout, again and again. A producer's `poll(1 ms)` is therefore
//! a millisecond of busy spinning, a consumer's `poll(4.7 ms)` ends in 0.7 ms of it, and
//! `flush` waits in 100 ms steps. [`settle`] serves a producer's delivery reports as they
//! arrive and sleeps briefly while none has; [`whole_millis`] rounds a consumer's wait up to
//! whole milliseconds, which librdkafka waits out in one call.

use std::time::{Duration, Instant};

use rdkafka::producer::{BaseProducer, Partitioner, Producer, ProducerContext};

/// How long to sleep when no delivery report has come since the last look.
const PAUSE: Duration = Duration::from_micros(100);

/// Serves delivery reports until nothing is in flight; `Err(n)` with the records still in
/// flight when `timeout` passes first.
pub fn settle<C, Part>(producer: &BaseProducer<C, Part>, timeout: Duration) -> Result<(), usize>
where
    C: ProducerContext<Part>,
    Part: Partitioner,
{
    // One event at most per call: its deadline has passed as soon as it starts.
    until_acknowledged(producer, timeout, || producer.poll(Duration::ZERO))
}

/// As [`settle`], for a producer whose own thread serves the reports
/// ([`ServedProducer`](crate::served::ServedProducer)).
pub fn settled<C, Part>(producer: &impl Producer<C, Part>, timeout: Duration) -> Result<(), usize>
where
    C: ProducerContext<Part>,
    Part: Partitioner,
{
    until_acknowledged(producer, timeout, || {})
}

fn until_acknowledged<C, Part>(
    producer: &impl Producer<C, Part>,
    timeout: Duration,
    serve: impl Fn(),
) -> Result<(), usize>
where
    C: ProducerContext<Part>,
    Part: Partitioner,
{
    let deadline = Instant::now() + timeout;
    loop {
        let before = producer.in_flight_count();
        if before <= 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(usize::try_from(before).unwrap_or(0));
        }
        serve();
        if producer.in_flight_count() == before {
            std::thread::sleep(PAUSE);
        }
    }
}

/// `wait` rounded up to whole milliseconds: a consumer's `poll` with it blocks in librdkafka
/// instead of spinning out the fraction.
pub fn whole_millis(wait: Duration) -> Duration {
    Duration::from_millis(u64::try_from(wait.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_round_up_to_whole_milliseconds() {
        assert_eq!(
            whole_millis(Duration::from_micros(4_700)),
            Duration::from_millis(5)
        );
        assert_eq!(
            whole_millis(Duration::from_millis(5)),
            Duration::from_millis(5)
        );
        assert_eq!(
            whole_millis(Duration::from_nanos(1)),
            Duration::from_millis(1)
        );
        assert_eq!(whole_millis(Duration::ZERO), Duration::ZERO);
    }
}
