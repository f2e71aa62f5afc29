//! The relay's position: the place (txid, seq) of the last row it published, committed to
//! [`POSITION_TOPIC`] in the same Kafka transaction as the events, and read back on start.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer},
    types::RDKafkaErrorCode,
};
use serde_json::{Value, json};
use tracing::warn;

use crate::POSITION_TOPIC;

/// Where the relay is: the place (txid, seq) of the last row it published or dead-lettered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    pub txid: u64,
    pub seq: i64,
}

impl Position {
    pub(crate) fn to_json(self) -> String {
        json!({ "txid": self.txid.to_string(), "seq": self.seq }).to_string()
    }

    fn from_json(bytes: &[u8]) -> Option<Self> {
        let value: Value = serde_json::from_slice(bytes).ok()?;
        Some(Self {
            txid: value["txid"].as_str()?.parse().ok()?,
            seq: value["seq"].as_i64()?,
        })
    }
}

/// Creates the position topic when missing: compacted, one partition.
pub(crate) fn ensure_position_topic(
    client: &ClientConfig,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = client.create()?;
    let topic = NewTopic::new(POSITION_TOPIC, 1, TopicReplication::Fixed(-1))
        .set("cleanup.policy", "compact");
    let results = runtime.block_on(admin.create_topics(
        [&topic],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
    ))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => bail!("create {topic}: {code}"),
        }
    }
    Ok(())
}

/// The last committed position of relay `name` (the start when it has none).
pub(crate) fn read_position(consumer: &BaseConsumer, name: &str) -> anyhow::Result<Position> {
    let started = Instant::now();
    let (low, end) = loop {
        match consumer.fetch_watermarks(POSITION_TOPIC, 0, Duration::from_secs(10)) {
            Ok(marks) => break marks,
            Err(error) if started.elapsed() < Duration::from_secs(60) => {
                warn!(%error, "Position topic not readable yet.");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(error) => return Err(error).context("reading the relay's position"),
        }
    };
    let mut position = Position::default();
    if low >= end {
        return Ok(position);
    }
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(POSITION_TOPIC, 0, Offset::Beginning)?;
    consumer.assign(&list)?;
    // Read to the end (past the transaction markers: the consumer's position moves beyond
    // them). read_committed stops at the last stable offset, so an open transaction of a
    // predecessor holds the read until it ends — our producer's initialisation has already
    // aborted it.
    let next = |consumer: &BaseConsumer| -> anyhow::Result<i64> {
        Ok(consumer
            .position()?
            .find_partition(POSITION_TOPIC, 0)
            .and_then(|p| p.offset().to_raw())
            .unwrap_or(-1))
    };
    while next(consumer)? < end {
        if started.elapsed() > Duration::from_secs(120) {
            bail!("the relay's position could not be read to its end ({end})");
        }
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message?;
            if message.key() == Some(name.as_bytes())
                && let Some(found) = message.payload().and_then(Position::from_json)
            {
                position = found;
            }
        }
    }
    Ok(position)
}
