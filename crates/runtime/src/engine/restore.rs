//! Restore: a store is rebuilt from its compacted changelog before the first record of its
//! partition is processed.

use super::*;

impl<P, C> Running<'_, P, C>
where
    P: Processor,
    C: Codec<In = P::In, Out = P::Out>,
{
    /// Reads a store's changelog partitions from the beginning to their end. The end is
    /// the client's end-of-partition event, which comes after the last transaction marker,
    /// so a changelog ending in a marker does not hold the restore up.
    pub(super) fn restore_store(
        &mut self,
        store: &str,
        states: &mut BTreeMap<i32, TaskState>,
    ) -> Result<(), Failure> {
        let started = Instant::now();
        let topic = self.engine.changelog(store);
        let mut list = TopicPartitionList::new();
        for partition in states.keys() {
            list.add_partition_offset(&topic, *partition, Offset::Beginning)
                .map_err(|source| {
                    Failure::Stop(EngineError::Kafka {
                        during: format!("listing {topic} for a restore"),
                        source,
                    })
                })?;
        }
        crate::kafka::assign_known(&self.restorer, &list).map_err(|source| {
            Failure::Stop(EngineError::Kafka {
                during: format!("assigning {topic} to the restore consumer"),
                source,
            })
        })?;
        let mut remaining: BTreeSet<i32> = states.keys().copied().collect();
        let deadline = started + Duration::from_millis(self.engine.config.restore_timeout_ms);
        let mut restored = 0_u64;
        while !remaining.is_empty() {
            if Instant::now() > deadline {
                return Err(Failure::Stop(EngineError::Stopped(format!(
                    "restoring {topic} partitions {remaining:?} took longer than {} ms",
                    self.engine.config.restore_timeout_ms
                ))));
            }
            match self.restorer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Ok(message)) => {
                    let Some(state) = states.get_mut(&message.partition()) else {
                        continue;
                    };
                    let key =
                        String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
                    state.restore(store, key, message.payload().map(<[u8]>::to_vec));
                    restored += 1;
                }
                Some(Err(KafkaError::PartitionEOF(partition))) => _ = remaining.remove(&partition),
                Some(Err(error)) if crate::kafka::is_transient(&error) => self
                    .engine
                    .metrics
                    .dependencies
                    .unreachable(dependency::BROKER, &error),
                Some(Err(error)) => warn!(%error, %topic, "Restore consumer error."),
            }
        }
        self.restorer.unassign().map_err(|source| {
            Failure::Stop(EngineError::Kafka {
                during: format!("unassigning {topic} after a restore"),
                source,
            })
        })?;
        let seconds = started.elapsed().as_secs_f64();
        self.engine
            .metrics
            .restore_seconds
            .with_label_values(&[store])
            .observe(seconds);
        debug!(%topic, restored, seconds, "Store restored.");
        Ok(())
    }
}
