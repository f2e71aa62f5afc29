//! How far a consumer is from the end of a partition.
//!
//! librdkafka keeps each fetched partition's high watermark from the last fetch response;
//! rdkafka does not expose it, so this module makes the one call that reads it. No
//! network round trip: it is cheap enough to ask whenever a merge waits on an input. Only
//! when the position is short of that high watermark is the broker asked where the
//! partition's committed records end (its last stable offset): what lies beyond is an open
//! transaction, which a read_committed reader cannot read until it ends and need not wait
//! for (Kafka Streams measures lag the same way).
#![allow(unsafe_code)]

use std::{
    collections::HashMap,
    ffi::CString,
    time::{Duration, Instant},
};

use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer, ConsumerContext},
};
use rdkafka_sys::{rd_kafka_get_watermark_offsets, rd_kafka_resp_err_t};

/// The low and high watermarks of `topic`/`partition` as of the consumer's last fetch
/// response; `None` before the first one.
pub fn cached<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
) -> Option<(i64, i64)> {
    let topic = CString::new(topic).ok()?;
    let (mut low, mut high) = (-1_i64, -1_i64);
    // SAFETY: the client handle lives as long as `consumer`, which is borrowed for the
    // call; `topic` is NUL-terminated and outlives it; `low` and `high` are live locals.
    // The function only reads the partition's cached offsets under its lock.
    let error = unsafe {
        rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &raw mut low,
            &raw mut high,
        )
    };
    (error == rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && low >= 0 && high >= 0)
        .then_some((low, high))
}

/// The consumer's positions (where the application is) in `partitions` of each of
/// `topics`, read from the client's partition state. `Consumer::position` first asks the
/// client's main thread for the assignment — a round trip between threads every time a
/// merge waits on an empty input, which the processor loop does hundreds of times a second.
pub fn positions<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topics: &[String],
    partitions: impl IntoIterator<Item = i32> + Clone,
) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for topic in topics {
        for partition in partitions.clone() {
            list.add_partition(topic, partition);
        }
    }
    // SAFETY: the client handle lives as long as `consumer`, borrowed for the call; `list`
    // is a valid list owned here, which the function only fills in with offsets.
    let error =
        unsafe { rdkafka_sys::rd_kafka_position(consumer.client().native_ptr(), list.ptr()) };
    if error != rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        return TopicPartitionList::new();
    }
    list
}

/// The last stable offsets the broker gave, by partition: asked only when a position falls
/// short of the cached high watermark, and again only once the position has reached the
/// last answer (until then the partition is known to be behind) and [`Self::REASK`] has
/// passed — so a backlog costs no round trips, and an open transaction at most one per
/// interval.
#[derive(Debug, Default)]
pub struct StableEnds {
    asked: HashMap<(String, i32), (i64, Instant)>,
}

impl StableEnds {
    /// How long an answer stands for a partition read up to it.
    pub const REASK: Duration = Duration::from_millis(10);

    /// Whether the consumer has read `topic`/`partition` to its end: its position (where
    /// the application is, transaction markers included) has reached the cached high
    /// watermark, or short of it, the broker's last stable offset (the rest is an open
    /// transaction). Before anything of the partition was delivered, the position is
    /// `start` (the committed offset), or the log start when nothing was committed.
    /// Unknown means no.
    ///
    /// The broker is asked through `asker`, a client of the same isolation level with a
    /// connection of its own: on the consumer's connection the question would wait behind
    /// its long-polling fetch (up to `fetch.wait.max.ms`).
    pub fn caught_up<C: ConsumerContext, A: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        asker: &BaseConsumer<A>,
        positions: &TopicPartitionList,
        start: Option<i64>,
        topic: &str,
        partition: i32,
    ) -> bool {
        let Some((low, high)) = cached(consumer, topic, partition) else {
            return false;
        };
        let position = match positions
            .find_partition(topic, partition)
            .map(|e| e.offset())
        {
            Some(Offset::Offset(offset)) => offset,
            _ => start.unwrap_or(low).max(low),
        };
        if position >= high {
            return true;
        }
        let key = (topic.to_owned(), partition);
        match self.asked.get(&key) {
            Some((stable, _)) if position < *stable => return false,
            Some((_, at)) if at.elapsed() < Self::REASK => return true,
            _ => {}
        }
        let stable = last_stable(asker, topic, partition).unwrap_or(high);
        _ = self.asked.insert(key, (stable, Instant::now()));
        position >= stable
    }

    /// Forgets what was asked (the partitions were reassigned or rewound).
    pub fn clear(&mut self) {
        self.asked.clear();
    }
}

/// The end of `topic`/`partition` for this consumer's isolation level, asked of the broker
/// (for a read_committed consumer, its last stable offset); `None` when it cannot be had.
pub fn last_stable<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(1))
        .ok()
        .map(|(_, high)| high)
}
