//! Dead letters: a record the processor could not decode or rejected, with headers that
//! say where it came from and why (in the spirit of Kafka's KIP-1034). Written in the
//! same transaction as the input offsets, so a dead-lettered record is never lost and
//! never reprocessed.

use chrono::{DateTime, SecondsFormat, Utc};

/// Header names of a dead letter.
pub mod headers {
    pub const SOURCE_TOPIC: &str = "habitat.dlq.source.topic";
    pub const SOURCE_PARTITION: &str = "habitat.dlq.source.partition";
    pub const SOURCE_OFFSET: &str = "habitat.dlq.source.offset";
    pub const PROCESSOR: &str = "habitat.dlq.processor";
    pub const ERROR_CLASS: &str = "habitat.dlq.error.class";
    pub const ERROR_MESSAGE: &str = "habitat.dlq.error.message";
    pub const TIME: &str = "habitat.dlq.time";
}

/// Error classes the runtime itself assigns (a processor's rejections bring their own).
pub mod class {
    /// The bytes are not a record of the expected format.
    pub const DESERIALIZATION: &str = "deserialization";
    /// The record names a schema the registry does not know.
    pub const UNKNOWN_SCHEMA: &str = "unknown-schema";
    /// A timer's handler rejected it.
    pub const TIMER: &str = "timer";
    /// A field that is not a valid amount of money (scale, range).
    pub const INVALID_AMOUNT: &str = "invalid-amount";
    /// A field that is not a valid ratio or weight.
    pub const INVALID_RATIO: &str = "invalid-ratio";
}

/// A record that went to the dead-letter topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub source_topic: String,
    pub source_partition: i32,
    /// `-1` for a timer.
    pub source_offset: i64,
    pub processor: String,
    pub class: String,
    pub message: String,
    pub time: DateTime<Utc>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

impl DeadLetter {
    /// The headers it is written with.
    pub fn headers(&self) -> Vec<(String, Vec<u8>)> {
        [
            (headers::SOURCE_TOPIC, self.source_topic.clone()),
            (headers::SOURCE_PARTITION, self.source_partition.to_string()),
            (headers::SOURCE_OFFSET, self.source_offset.to_string()),
            (headers::PROCESSOR, self.processor.clone()),
            (headers::ERROR_CLASS, self.class.clone()),
            (headers::ERROR_MESSAGE, self.message.clone()),
            (
                headers::TIME,
                self.time.to_rfc3339_opts(SecondsFormat::Millis, true),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into_bytes()))
        .collect()
    }
}

impl DeadLetter {
    /// Reads a dead-letter record back: its headers, and the original key and value.
    /// `None` when a header is missing or malformed.
    pub fn from_record(
        headers: &[(String, Vec<u8>)],
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
    ) -> Option<Self> {
        let text = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| String::from_utf8(v.clone()).ok())
        };
        Some(Self {
            source_topic: text(headers::SOURCE_TOPIC)?,
            source_partition: text(headers::SOURCE_PARTITION)?.parse().ok()?,
            source_offset: text(headers::SOURCE_OFFSET)?.parse().ok()?,
            processor: text(headers::PROCESSOR)?,
            class: text(headers::ERROR_CLASS)?,
            message: text(headers::ERROR_MESSAGE)?,
            time: DateTime::parse_from_rfc3339(&text(headers::TIME)?)
                .ok()?
                .with_timezone(&Utc),
            key,
            value,
        })
    }
}

/// Where a dead-lettered record was read: topic, partition, offset.
pub type Source<'a> = (&'a str, i32, i64);

impl DeadLetter {
    /// A record whose bytes the codec could not decode.
    pub fn undecodable(
        source: Source<'_>,
        processor: &str,
        error: &crate::CodecError,
        time: DateTime<Utc>,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
    ) -> Self {
        let class = match error {
            crate::CodecError::UnknownSchema(_) => class::UNKNOWN_SCHEMA,
            _ => class::DESERIALIZATION,
        };
        Self {
            source_topic: source.0.to_owned(),
            source_partition: source.1,
            source_offset: source.2,
            processor: processor.to_owned(),
            class: class.to_owned(),
            message: error.to_string(),
            time,
            key,
            value,
        }
    }
}
