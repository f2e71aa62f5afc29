//! Processing: merged records through the processor (the same step the test driver runs),
//! due timers, and what they emit — outputs, changelog records, dead letters — added to the
//! open batch.

use super::*;

impl<P, C> Running<'_, P, C>
where
    P: Processor,
    C: Codec<In = P::In, Out = P::Out>,
{
    /// Runs the processor over every record its partition's merge order allows.
    pub(super) fn process_ready(&mut self) -> Result<(), Failure> {
        let now = Instant::now();
        let idle = self.engine.config.max_task_idle();
        // One view of the processor and the clock per pass, not per record.
        let env = self.env();
        // The client's positions, read once per pass and only if a merge waits on an input.
        let mut positions: Option<TopicPartitionList> = None;
        let partitions: Vec<i32> = self.tasks.keys().copied().collect();
        for &partition in &partitions {
            loop {
                if self.batch.is_full(&self.engine.config) {
                    return Ok(());
                }
                // Timers due on the clock fire before the partition's next record: a record
                // replayed long after it was first written meets the timers the live run had
                // fired by then (a payment falls due before its late result is applied).
                if !self.fire_due(partition, &env)? {
                    return Ok(());
                }
                let Some(task) = self.tasks.get_mut(&partition) else {
                    break;
                };
                let (consumer, inputs, starts) = (&self.consumer, &self.inputs, &self.starts);
                let (assigned, ends, asker) = (&partitions, &mut self.ends, &self.restorer);
                let caught_up = |input: usize| {
                    let topic = &inputs[input];
                    let positions = positions.get_or_insert_with(|| {
                        watermark::positions(consumer, inputs, assigned.iter().copied())
                    });
                    let start = starts.get(&(topic.clone(), partition)).copied();
                    ends.caught_up(consumer, asker, positions, start, topic, partition)
                };
                let Some(pending) = task.merger.pop(now, idle, caught_up) else {
                    break;
                };
                self.batch.touch();
                let (topic, offset) = match pending {
                    Pending::Decoded { record, raw } => {
                        let trace = record.value.as_ref().and_then(Payload::trace);
                        let span = info_span!(
                            "record",
                            topic = %record.topic,
                            partition,
                            offset = record.offset,
                            tenant = trace.as_ref().map(|t| t.tenant_id.as_str()),
                            event_id = trace.as_ref().map(|t| t.event_id.as_str()),
                            correlation_id = trace.as_ref().map(|t| t.correlation_id.as_str()),
                        );
                        let _entered = span.enter();
                        let task = self.tasks.get_mut(&partition).expect("task present");
                        let outcome = step::record(
                            &self.engine.processor,
                            &mut task.state,
                            &env,
                            &record,
                            raw,
                        )
                        .map_err(|e| self.stop(e))?;
                        self.batch
                            .occurred
                            .push(trace.map_or(record.timestamp, |t| t.occurred_at));
                        self.settle(outcome)?;
                        (record.topic, record.offset)
                    }
                    Pending::Undecodable(letter) => {
                        let position = (letter.source_topic.clone(), letter.source_offset);
                        self.dead_letter(*letter)?;
                        position
                    }
                    Pending::Passed { input, offset } => {
                        let topic = self.inputs[input].clone();
                        *self.batch.passed.entry(topic.clone()).or_default() += 1;
                        (topic, offset)
                    }
                };
                *self.batch.records_in.entry(topic.clone()).or_default() += 1;
                self.batch.records += 1;
                _ = self.batch.offsets.insert((topic, partition), offset + 1);
            }
        }
        Ok(())
    }

    pub(super) fn fire_timers(&mut self) -> Result<(), Failure> {
        let env = self.env();
        let partitions: Vec<i32> = self.tasks.keys().copied().collect();
        for partition in partitions {
            if !self.fire_due(partition, &env)? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Fires a partition's timers due at `env.now`; false when the batch filled first (the
    /// rest fire after its commit).
    fn fire_due(&mut self, partition: i32, env: &Env) -> Result<bool, Failure> {
        let Some(task) = self.tasks.get(&partition) else {
            return Ok(true);
        };
        if task.state.next_due().is_none_or(|due| due > env.now) {
            return Ok(true);
        }
        for timer in task.state.due_timers(env.now) {
            if self.batch.is_full(&self.engine.config) {
                return Ok(false);
            }
            self.batch.touch();
            let task = self.tasks.get_mut(&partition).expect("task present");
            let outcome = step::timer(&self.engine.processor, &mut task.state, env, &timer)
                .map_err(|e| self.stop(e))?;
            debug!(timer = %timer.name, key = %timer.key, partition, "Timer fired.");
            self.batch.timers += 1;
            self.settle(outcome)?;
        }
        Ok(true)
    }

    /// A processor's error that stops the engine; a broken invariant is counted first.
    fn stop(&self, error: ProcessError) -> Failure {
        if let ProcessError::Broken { invariant, .. } = &error {
            self.engine
                .metrics
                .invariant_breaks
                .with_label_values(&[invariant.as_str()])
                .inc();
        }
        Failure::Stop(error.into())
    }

    pub(super) fn settle(&mut self, outcome: Outcome<P::Out>) -> Result<(), Failure> {
        match outcome {
            Outcome::Emitted(outputs) => self.emit(outputs),
            Outcome::DeadLettered(letter) => self.dead_letter(letter),
        }
    }

    pub(super) fn emit(&mut self, outputs: Vec<Output<P::Out>>) -> Result<(), Failure> {
        for output in outputs {
            let partitions = topic_partitions(&self.consumer, &mut self.partitions, &output.topic)
                .map_err(Failure::Stop)?;
            let value = match &output.value {
                None => None,
                Some(value) => Some(self.engine.codec.encode(&output.topic, value).map_err(
                    |e| match e {
                        CodecError::Unavailable(reason) => Failure::Abort(reason),
                        CodecError::Unauthorized(reason) => {
                            Failure::Stop(EngineError::Setup(reason))
                        }
                        other => Failure::Stop(EngineError::Processor(other.to_string())),
                    },
                )?),
            };
            self.batch.produce.push(Encoded {
                partition: partition_for(&output.key, partitions),
                key: Some(output.key.into_bytes()),
                topic: output.topic,
                value,
                headers: output.headers,
            });
        }
        Ok(())
    }

    pub(super) fn dead_letter(&mut self, letter: DeadLetter) -> Result<(), Failure> {
        warn!(
            topic = %letter.source_topic,
            partition = letter.source_partition,
            offset = letter.source_offset,
            class = %letter.class,
            error = %letter.message,
            "Record dead-lettered."
        );
        let topic = self.engine.dead_letter_topic();
        let partitions = topic_partitions(&self.consumer, &mut self.partitions, &topic)
            .map_err(Failure::Stop)?;
        *self
            .batch
            .dead_letters
            .entry(letter.class.clone())
            .or_default() += 1;
        self.batch.produce.push(Encoded {
            partition: letter.source_partition.rem_euclid(partitions),
            headers: letter.headers(),
            topic,
            key: letter.key,
            value: letter.value,
        });
        Ok(())
    }
}
