//! Merges the inputs of one partition number in timestamp order.
//!
//! A partition's next record is the earliest head among its input topics (ties: the
//! order of the inputs, then the offset), taken only when every input has a record
//! buffered — so the order does not depend on fetch timing. An empty input that is
//! behind (the broker holds records of it not fetched yet, or its end is not known yet)
//! holds the others for as long as it is behind: one of its records may be earlier. An
//! empty input that is caught up is merged without after `max_task_idle`, so a quiet
//! topic does not stall the others. These are Kafka Streams' rules (KIP-695).

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};

/// The buffered inputs of one partition number.
#[derive(Debug)]
pub struct Merger<T> {
    buffers: Vec<VecDeque<(DateTime<Utc>, i64, T)>>,
    blocked_since: Option<Instant>,
}

impl<T> Merger<T> {
    /// A merger over `inputs` topics (their order breaks timestamp ties).
    pub fn new(inputs: usize) -> Self {
        Self {
            buffers: (0..inputs).map(|_| VecDeque::new()).collect(),
            blocked_since: None,
        }
    }

    /// Buffers a record of input `input`.
    pub fn push(&mut self, input: usize, timestamp: DateTime<Utc>, offset: i64, item: T) {
        self.buffers[input].push_back((timestamp, offset, item));
    }

    /// Records buffered for input `input`.
    pub fn buffered(&self, input: usize) -> usize {
        self.buffers[input].len()
    }

    /// Records buffered in all.
    pub fn len(&self) -> usize {
        self.buffers.iter().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next record in merge order, if it may be taken at `now`; `caught_up(input)`
    /// tells whether an input has nothing left to fetch (asked only of empty inputs).
    pub fn pop(
        &mut self,
        now: Instant,
        max_idle: Duration,
        mut caught_up: impl FnMut(usize) -> bool,
    ) -> Option<T> {
        if self.buffers.iter().any(VecDeque::is_empty) {
            if self.is_empty() {
                self.blocked_since = None;
                return None;
            }
            let behind = self
                .buffers
                .iter()
                .enumerate()
                .any(|(i, b)| b.is_empty() && !caught_up(i));
            if behind {
                self.blocked_since = None;
                return None;
            }
            let since = *self.blocked_since.get_or_insert(now);
            if now.duration_since(since) < max_idle {
                return None;
            }
        } else {
            self.blocked_since = None;
        }
        let input = self
            .buffers
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.front().map(|(ts, offset, _)| (*ts, i, *offset)))
            .min()?
            .1;
        self.buffers[input].pop_front().map(|(_, _, item)| item)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(second: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, second)
            .single()
            .expect("valid")
    }

    #[test]
    fn earliest_head_first_and_ties_by_input_order() {
        let mut merger = Merger::new(2);
        merger.push(1, at(1), 0, "b1");
        merger.push(0, at(1), 0, "a1");
        merger.push(0, at(3), 1, "a3");
        merger.push(1, at(2), 1, "b2");
        merger.push(1, at(4), 2, "b4");
        let now = Instant::now();
        let idle = Duration::from_secs(60);
        let mut order = Vec::new();
        while let Some(item) = merger.pop(now, idle, |_| true) {
            order.push(item);
        }
        // a1 and b1 tie: input 0 first; a3 is last of input 0, so b4 waits for it.
        assert_eq!(order, ["a1", "b1", "b2", "a3"]);
        assert_eq!(merger.len(), 1);
    }

    #[test]
    fn a_caught_up_empty_input_holds_the_others_until_idle() {
        let mut merger = Merger::new(2);
        merger.push(0, at(5), 0, "a5");
        let start = Instant::now();
        let idle = Duration::from_millis(500);
        let caught_up = |_| true;
        assert_eq!(merger.pop(start, idle, caught_up), None);
        assert_eq!(
            merger.pop(start + Duration::from_millis(499), idle, caught_up),
            None
        );
        assert_eq!(merger.pop(start + idle, idle, caught_up), Some("a5"));
    }

    #[test]
    fn an_empty_input_that_is_behind_holds_the_others_past_idle() {
        let mut merger = Merger::new(2);
        merger.push(1, at(9), 0, "close");
        let start = Instant::now();
        let idle = Duration::ZERO;
        let mut asked = Vec::new();
        let mut behind = |i| {
            asked.push(i);
            false
        };
        assert_eq!(merger.pop(start, idle, &mut behind), None);
        assert_eq!(
            merger.pop(start + Duration::from_secs(60), idle, &mut behind),
            None
        );
        assert_eq!(asked, [0, 0], "only the empty input is asked about");
        // Its records arrive: the earlier one goes first, then it is caught up.
        merger.push(0, at(5), 0, "contribution");
        let later = start + Duration::from_secs(61);
        assert_eq!(merger.pop(later, idle, |_| true), Some("contribution"));
        assert_eq!(merger.pop(later, idle, |_| true), Some("close"));
    }

    #[test]
    fn the_idle_wait_starts_when_the_empty_input_catches_up() {
        let mut merger = Merger::new(2);
        merger.push(0, at(5), 0, "a5");
        let start = Instant::now();
        let idle = Duration::from_millis(500);
        assert_eq!(merger.pop(start, idle, |_| false), None);
        let caught = start + Duration::from_secs(10);
        assert_eq!(merger.pop(caught, idle, |_| true), None);
        assert_eq!(
            merger.pop(caught + Duration::from_millis(499), idle, |_| true),
            None
        );
        assert_eq!(merger.pop(caught + idle, idle, |_| true), Some("a5"));
    }

    #[test]
    fn one_input_never_waits() {
        let mut merger = Merger::new(1);
        merger.push(0, at(5), 7, 7);
        let never = |_| -> bool { unreachable!("no input is empty while one is buffered") };
        assert_eq!(
            merger.pop(Instant::now(), Duration::from_secs(60), never),
            Some(7)
        );
        assert_eq!(
            merger.pop(Instant::now(), Duration::from_secs(60), |_| true),
            None
        );
    }
}
