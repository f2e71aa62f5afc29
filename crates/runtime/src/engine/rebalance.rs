//! Rebalances: a revoked partition's uncommitted work is dropped (its new owner redoes it
//! from the committed offsets); an assigned one gets its tasks, its stores restored and its
//! read start.

use super::*;

impl<P, C> Running<'_, P, C>
where
    P: Processor,
    C: Codec<In = P::In, Out = P::Out>,
{
    pub(super) fn handle_rebalances(&mut self) -> Result<(), EngineError> {
        let events = self.consumer.context().events.take();
        for event in events {
            match event {
                Rebalanced::Revoked => {
                    if !self.batch.is_empty() {
                        info!(
                            "Partitions revoked: the uncommitted batch is left to their next owner."
                        );
                    }
                    self.batch = Batch::default();
                    self.tasks.clear();
                    self.paused.clear();
                    self.ends.clear();
                    self.engine.metrics.assigned_partitions.set(0);
                }
                Rebalanced::Assigned(partitions) => {
                    let fresh: Vec<i32> = partitions
                        .iter()
                        .copied()
                        .filter(|p| !self.tasks.contains_key(p))
                        .collect();
                    self.open_tasks(&fresh).map_err(|f| match f {
                        Failure::Stop(e) => e,
                        Failure::Abort(m) => {
                            EngineError::Stopped(format!("opening the tasks: {m}"))
                        }
                    })?;
                    self.engine
                        .metrics
                        .assigned_partitions
                        .set(i64::try_from(self.tasks.len()).unwrap_or(i64::MAX));
                    info!(partitions = ?partitions, "Partitions assigned and restored.");
                }
            }
        }
        Ok(())
    }

    /// Restores the stores of `partitions` and announces them to the processor.
    pub(super) fn open_tasks(&mut self, partitions: &[i32]) -> Result<(), Failure> {
        if partitions.is_empty() {
            return Ok(());
        }
        self.engine.metrics.set_ready(false);
        let mut states: BTreeMap<i32, TaskState> = partitions
            .iter()
            .map(|p| (*p, TaskState::new(*p, &self.engine.processor.stores())))
            .collect();
        let stores: Vec<&str> = self
            .engine
            .processor
            .stores()
            .into_iter()
            .chain([TIMERS_STORE])
            .collect();
        for store in stores {
            self.restore_store(store, &mut states)?;
        }
        let env = self.env();
        for (partition, mut state) in states {
            let outputs = step::assigned(&self.engine.processor, &mut state, &env)
                .map_err(|e| Failure::Stop(EngineError::Processor(e.to_string())))?;
            self.emit(outputs)?;
            let merger = Merger::new(self.inputs.len());
            _ = self.tasks.insert(partition, Task { state, merger });
        }
        self.read_starts(partitions)?;
        self.engine.metrics.set_ready(true);
        Ok(())
    }

    /// Records where reading starts in each input partition of `partitions`.
    pub(super) fn read_starts(&mut self, partitions: &[i32]) -> Result<(), Failure> {
        let mut list = TopicPartitionList::new();
        for topic in &self.inputs {
            for partition in partitions {
                list.add_partition(topic, *partition);
            }
        }
        let committed = self
            .engine
            .config
            .retry_policy()
            .blocking(
                "reading the committed offsets",
                || {
                    self.consumer
                        .committed_offsets(list.clone(), Duration::from_secs(10))
                },
                crate::kafka::is_transient,
            )
            .map_err(|e| Failure::Abort(format!("committed offsets: {e}")))?;
        for element in committed.elements() {
            let key = (element.topic().to_owned(), element.partition());
            match element.offset() {
                Offset::Offset(offset) => _ = self.starts.insert(key, offset),
                _ => _ = self.starts.remove(&key),
            }
        }
        Ok(())
    }
}
