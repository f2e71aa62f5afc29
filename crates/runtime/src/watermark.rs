//! How far a consumer is from the end of a partition, from what the client already knows.
//!
//! librdkafka keeps each fetched partition's high watermark from the last fetch response;
//! rdkafka does not expose it, so this module makes the one call that reads it. No
//! network round trip: it is cheap enough to ask whenever a merge waits on an input.
#![allow(unsafe_code)]

use std::ffi::CString;

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

/// Whether the consumer has read `topic`/`partition` to its end: its position (where the
/// application is, transaction markers included) has reached the cached high watermark.
/// Before anything of the partition was delivered, the position is `start` (the
/// committed offset), or the log start when nothing was committed. Unknown means no.
pub fn caught_up<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
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
    position >= high
}
