//! Why the engine stops, and how each Kafka error of a transaction is classified: abort
//! and redo from the committed offsets, or stop (fenced, fatal).

use super::*;

/// Why the engine stopped.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Another instance with the same transactional id took over, or the group moved on.
    #[error("fenced: {0}")]
    Fenced(String),
    /// Kafka answered with an error that cannot be recovered from, while `during`.
    #[error("fatal Kafka error while {during}: {source}")]
    Kafka {
        during: String,
        #[source]
        source: KafkaError,
    },
    /// A step failed for good after its retries (an abort that could not be redone, a
    /// restore that took too long).
    #[error("stopped: {0}")]
    Stopped(String),
    /// The processor failed in a way that is not a rejected record.
    #[error("processor error: {0}")]
    Processor(String),
    /// An invariant the processor owns did not hold: nothing of the transaction was
    /// written, and the process halts for an operator.
    #[error("invariant {invariant} broken: {evidence}")]
    Broken { invariant: String, evidence: String },
    /// The configuration or the topics are not usable.
    #[error("{0}")]
    Setup(String),
}

/// What to do after a failed step of a transaction.
pub(super) enum Failure {
    /// Abort, rewind to the committed offsets, go on.
    Abort(String),
    /// Stop the process.
    Stop(EngineError),
}

pub(super) fn classify(error: &KafkaError) -> Failure {
    if let Some(code) = error.rdkafka_error_code()
        && matches!(
            code,
            ErrorCode::Fenced | ErrorCode::ProducerFenced | ErrorCode::InvalidProducerEpoch
        )
    {
        return Failure::Stop(EngineError::Fenced(error.to_string()));
    }
    match error {
        KafkaError::Transaction(e) if e.is_fatal() => {
            if matches!(e.code(), ErrorCode::Fenced | ErrorCode::ProducerFenced) {
                Failure::Stop(EngineError::Fenced(e.to_string()))
            } else {
                Failure::Stop(EngineError::Kafka {
                    during: "a transaction".to_owned(),
                    source: error.clone(),
                })
            }
        }
        other => Failure::Abort(other.to_string()),
    }
}

/// Errors the processor returns that stop the engine.
impl From<ProcessError> for EngineError {
    fn from(error: ProcessError) -> Self {
        match error {
            ProcessError::Broken {
                invariant,
                evidence,
            } => Self::Broken {
                invariant,
                evidence,
            },
            other => Self::Processor(other.to_string()),
        }
    }
}

/// Logs how the engine stopped.
pub fn report(outcome: &Result<(), EngineError>) {
    match outcome {
        Ok(()) => info!("Stopped cleanly."),
        Err(error) => error!(%error, "Stopped on an error."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fenced_or_stale_epoch_producer_stops_as_fenced() {
        for code in [
            ErrorCode::ProducerFenced,
            ErrorCode::InvalidProducerEpoch,
            ErrorCode::Fenced,
        ] {
            let failure = classify(&KafkaError::MessageProduction(code));
            assert!(
                matches!(failure, Failure::Stop(EngineError::Fenced(_))),
                "{code:?}"
            );
        }
    }

    #[test]
    fn other_errors_abort_and_redo_from_the_committed_offsets() {
        for error in [
            KafkaError::MessageProduction(ErrorCode::RequestTimedOut),
            KafkaError::Flush(ErrorCode::MessageTimedOut),
            KafkaError::MessageProduction(ErrorCode::NotCoordinator),
            KafkaError::ConsumerCommit(ErrorCode::UnknownMemberId),
        ] {
            let text = error.to_string();
            assert!(
                matches!(classify(&error), Failure::Abort(reason) if reason == text),
                "{text}"
            );
        }
    }
}
