//! Kafka client settings and topic set-up shared by the CLI's commands.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    error::KafkaError,
    producer::{BaseProducer, BaseRecord},
    types::RDKafkaErrorCode,
};

/// Client settings every command starts from.
pub fn config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    _ = config
        .set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4");
    config
}

/// Creates a topic; one that exists already is fine.
pub fn ensure_topic(bootstrap: &str, topic: &str, partitions: i32) -> Result<()> {
    ensure_topic_with(&config(bootstrap), topic, partitions)
}

/// [`ensure_topic`] through a client configured with `client`.
pub fn ensure_topic_with(client: &ClientConfig, topic: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = client.create()?;
    let results = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(admin.create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        ))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => bail!("cannot create {topic}: {code}"),
        }
    }
    Ok(())
}

/// Sends a record, waiting for room while the producer's queue is full; serves delivery
/// reports as it goes.
pub fn send(producer: &BaseProducer, mut record: BaseRecord<'_, str, [u8]>) -> Result<()> {
    loop {
        match producer.send(record) {
            Ok(()) => {
                producer.poll(Duration::ZERO);
                return Ok(());
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                producer.poll(Duration::from_millis(5));
            }
            Err((error, _)) => return Err(error).context("produce"),
        }
    }
}
