//! One step of a partition — a record or a due timer — run the same way by the engine
//! and the test driver: its effects apply only if the processor accepts it; a rejection
//! becomes a dead letter; a fatal error stops everything.

use crate::{
    Payload, ProcessError, Processor, Record, Timer,
    dlq::{self, DeadLetter},
    task::{Env, Output, TaskState},
};

/// What a step produced.
#[derive(Debug)]
pub enum Outcome<V> {
    /// Accepted: these records are to be produced.
    Emitted(Vec<Output<V>>),
    /// Rejected: this goes to the dead-letter topic instead.
    DeadLettered(DeadLetter),
}

/// Handles an input record. `raw` is the record's (key, value) bytes for the dead letter.
pub fn record<P: Processor>(
    processor: &P,
    task: &mut TaskState,
    env: &Env,
    record: &Record<P::In>,
    raw: (Option<Vec<u8>>, Option<Vec<u8>>),
) -> Result<Outcome<P::Out>, ProcessError> {
    let cause = record.value.as_ref().and_then(Payload::trace);
    match task.invoke(env, cause, |ctx| processor.process(ctx, record)) {
        Ok(outputs) => Ok(Outcome::Emitted(outputs)),
        Err(ProcessError::Rejected { class, message }) => Ok(Outcome::DeadLettered(DeadLetter {
            source_topic: record.topic.clone(),
            source_partition: record.partition,
            source_offset: record.offset,
            processor: env.processor.clone(),
            class,
            message,
            time: env.now,
            key: raw.0,
            value: raw.1,
        })),
        Err(fatal) => Err(fatal),
    }
}

/// Fires a due timer: it is removed in the same step whatever the handler says.
pub fn timer<P: Processor>(
    processor: &P,
    task: &mut TaskState,
    env: &Env,
    timer: &Timer,
) -> Result<Outcome<P::Out>, ProcessError> {
    let fired = task.invoke(env, None, |ctx| {
        ctx.cancel(&timer.name, &timer.key)?;
        processor.on_timer(ctx, timer)
    });
    match fired {
        Ok(outputs) => Ok(Outcome::Emitted(outputs)),
        Err(ProcessError::Rejected { class, message }) => {
            _ = task.invoke::<P::Out, _>(env, None, |ctx| ctx.cancel(&timer.name, &timer.key))?;
            Ok(Outcome::DeadLettered(DeadLetter {
                source_topic: format!("timer:{}", timer.name),
                source_partition: task.partition(),
                source_offset: -1,
                processor: env.processor.clone(),
                class: format!("{}:{class}", dlq::class::TIMER),
                message,
                time: env.now,
                key: Some(timer.key.clone().into_bytes()),
                value: serde_json::to_vec(timer).ok(),
            }))
        }
        Err(fatal) => Err(fatal),
    }
}

/// Announces a freshly restored partition to the processor.
pub fn assigned<P: Processor>(
    processor: &P,
    task: &mut TaskState,
    env: &Env,
) -> Result<Vec<Output<P::Out>>, ProcessError> {
    task.invoke(env, None, |ctx| processor.on_assigned(ctx))
}
