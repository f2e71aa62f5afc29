//! Intake: a consumed record is decoded (or passed over, or dead-lettered when it cannot
//! be) into its partition's merger; partitions whose buffer is full are paused until it
//! drains.

use super::*;

/// What became of a consumed record.
pub(super) enum Accepted {
    /// Buffered in its partition's merger (or dropped: not an input, or not assigned).
    Buffered,
    /// The registry could not be asked about its schema: the record (at `offset` of
    /// `topic`/`partition`) must be read again once it answers.
    RegistryUnavailable {
        reason: String,
        topic: String,
        partition: i32,
        offset: i64,
    },
    /// The registry refused our credentials: the instance stops.
    RegistryRefused(String),
}

/// Buffers a consumed record in its partition's merger: decoded, passed over (a type the
/// processor does not read), or as a dead letter when it cannot be decoded.
pub(super) fn accept<P, C>(
    engine: &Engine<P, C>,
    inputs: &[String],
    reads: Option<&HashSet<String>>,
    tasks: &mut BTreeMap<i32, Task<P::In>>,
    message: &impl Message,
) -> Result<Accepted, KafkaError>
where
    P: Processor,
    C: Codec<In = P::In, Out = P::Out>,
{
    let topic = message.topic();
    let partition = message.partition();
    let offset = message.offset();
    let Some(input) = inputs.iter().position(|t| t == topic) else {
        return Ok(Accepted::Buffered);
    };
    let Some(task) = tasks.get_mut(&partition) else {
        debug!(%topic, partition, "Record of a partition not assigned; dropped.");
        return Ok(Accepted::Buffered);
    };
    let timestamp = message
        .timestamp()
        .to_millis()
        .and_then(DateTime::from_timestamp_millis)
        .unwrap_or_else(Utc::now);
    if let (Some(reads), Some(bytes)) = (reads, message.payload())
        && !engine.codec.is_read(bytes, reads)
    {
        task.merger
            .push(input, timestamp, offset, Pending::Passed { input, offset });
        return Ok(Accepted::Buffered);
    }
    let raw_key = message.key().map(<[u8]>::to_vec);
    let value = match message.payload() {
        None => Ok(None),
        Some(bytes) => engine.codec.decode(topic, bytes).map(Some),
    };
    let pending = match value {
        Ok(value) => Pending::Decoded {
            record: Box::new(Record {
                topic: topic.to_owned(),
                partition,
                offset,
                timestamp,
                key: raw_key
                    .as_deref()
                    .map(|k| String::from_utf8_lossy(k).into_owned()),
                value,
                headers: headers_of(message),
            }),
            raw: (raw_key, message.payload().map(<[u8]>::to_vec)),
        },
        Err(CodecError::Unavailable(reason)) => {
            return Ok(Accepted::RegistryUnavailable {
                reason,
                topic: topic.to_owned(),
                partition,
                offset,
            });
        }
        Err(CodecError::Unauthorized(reason)) => return Ok(Accepted::RegistryRefused(reason)),
        Err(error) => Pending::Undecodable(Box::new(DeadLetter::undecodable(
            (topic, partition, offset),
            engine.processor.name(),
            &error,
            engine.clock.now(),
            raw_key,
            message.payload().map(<[u8]>::to_vec),
        ))),
    };
    task.merger.push(input, timestamp, offset, pending);
    Ok(Accepted::Buffered)
}

impl<P, C> Running<'_, P, C>
where
    P: Processor,
    C: Codec<In = P::In, Out = P::Out>,
{
    /// Pauses fetching partitions whose buffer is full; resumes them when drained.
    pub(super) fn apply_backpressure(&mut self) {
        let limit = self.engine.config.max_buffered_records;
        let mut pause = TopicPartitionList::new();
        let mut resume = TopicPartitionList::new();
        for (partition, task) in &self.tasks {
            for (i, topic) in self.inputs.iter().enumerate() {
                let key = (topic.clone(), *partition);
                let buffered = task.merger.buffered(i);
                if buffered >= limit && !self.paused.contains(&key) {
                    pause.add_partition(topic, *partition);
                    _ = self.paused.insert(key);
                } else if buffered < limit / 2 && self.paused.remove(&key) {
                    resume.add_partition(topic, *partition);
                }
            }
        }
        if pause.count() > 0
            && let Err(error) = self.consumer.pause(&pause)
        {
            warn!(%error, "Pause failed.");
        }
        if resume.count() > 0
            && let Err(error) = self.consumer.resume(&resume)
        {
            warn!(%error, "Resume failed.");
        }
    }
}
