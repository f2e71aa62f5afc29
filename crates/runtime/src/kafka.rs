//! What the engine's loop and the sink's share of Kafka: the queue their consumer
//! callbacks hand rebalances to the loop through, the headers of a consumed record, which
//! errors mean the broker is away (waited out, not fatal), and waits on librdkafka
//! without spinning ([`crate::waits`]).

use std::sync::Mutex;

use rdkafka::{
    ClientContext, TopicPartitionList,
    config::RDKafkaLogLevel,
    consumer::{BaseConsumer, Consumer, ConsumerContext},
    error::{KafkaError, KafkaResult, RDKafkaErrorCode},
    message::{DeliveryResult, Headers, Message},
    producer::ProducerContext,
};
use tracing::{debug, error, info, warn};

use crate::health::{Dependencies, dependency};

pub use crate::waits::{settle, settled, whole_millis};

/// How long a consumer's fetch waits at the broker for records (`fetch.wait.max.ms`,
/// librdkafka's default): a long poll, answered as soon as committed records arrive, so it
/// bounds only how often an idle consumer asks again. Measured (docs/benchmarks.md): no
/// change under load; an idle stack's broker 1.3–1.7 → 0.3 % of a core against 100 ms (50 ms
/// for the sink).
pub const IDLE_FETCH_WAIT_MS: &str = "500";

/// The headers of a consumed record, as (name, value) pairs.
pub fn headers_of(message: &impl Message) -> Vec<(String, Vec<u8>)> {
    message
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default()
}

/// What a consumer's rebalance callback hands its loop: events in the order they happened,
/// and a failure that must stop it. librdkafka calls the callback inside `poll`, on the
/// loop's own thread, so the loop sees them right after the poll that caused them.
#[derive(Debug)]
pub struct Rebalances<E> {
    events: Mutex<Vec<E>>,
    failure: Mutex<Option<String>>,
}

impl<E> Default for Rebalances<E> {
    fn default() -> Self {
        Self {
            events: Mutex::new(Vec::new()),
            failure: Mutex::new(None),
        }
    }
}

impl<E> Rebalances<E> {
    /// Queues an event for the loop.
    pub fn push(&self, event: E) {
        self.events.lock().expect("rebalances lock").push(event);
    }

    /// Whether events wait for the loop.
    pub fn pending(&self) -> bool {
        !self.events.lock().expect("rebalances lock").is_empty()
    }

    /// The queued events, oldest first; the queue is left empty.
    pub fn take(&self) -> Vec<E> {
        std::mem::take(&mut *self.events.lock().expect("rebalances lock"))
    }

    /// Records why the consumer cannot go on (the loop stops on it).
    pub fn fail(&self, reason: String) {
        tracing::warn!(%reason, "Assignment failed.");
        *self.failure.lock().expect("rebalances lock") = Some(reason);
    }

    /// The failure recorded, if any (taken).
    pub fn take_failure(&self) -> Option<String> {
        self.failure.lock().expect("rebalances lock").take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_come_out_in_order_once_and_a_failure_once() {
        let queue = Rebalances::default();
        assert!(!queue.pending());
        queue.push(1);
        queue.push(2);
        assert!(queue.pending());
        assert_eq!(queue.take(), [1, 2]);
        assert!(queue.take().is_empty());
        queue.fail("stored offsets unreadable".to_owned());
        assert_eq!(
            queue.take_failure().as_deref(),
            Some("stored offsets unreadable")
        );
        assert_eq!(queue.take_failure(), None);
    }
}

/// Whether an error means the broker cannot be reached (now): connections down, a call
/// timed out, the coordinator moving or loading. Such errors are waited out.
pub fn is_transient(error: &KafkaError) -> bool {
    error.rdkafka_error_code().is_some_and(|code| {
        matches!(
            code,
            RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::NetworkException
                | RDKafkaErrorCode::CoordinatorNotAvailable
                | RDKafkaErrorCode::NotCoordinator
                | RDKafkaErrorCode::CoordinatorLoadInProgress
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::Resolve
                | RDKafkaErrorCode::TimedOutQueue
        )
    })
}

/// How long [`assign_known`] waits for a topic's metadata.
pub const ASSIGN_METADATA_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Assigns `list` to `consumer` once the consumer knows its topics' leaders. librdkafka
/// looks up the leaders of a topic it has no metadata for only on its periodic scan of
/// such topics, once a second: a consumer assigned a new topic fetches nothing for half a
/// second to a second (measured, docs/benchmarks.md). Asking for the topics' metadata
/// first removes that wait. A broker that does not answer within
/// [`ASSIGN_METADATA_TIMEOUT`] is left to the assignment's own fetches, as before.
pub fn assign_known<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    list: &TopicPartitionList,
) -> KafkaResult<()> {
    let topics: std::collections::BTreeSet<String> = list
        .elements()
        .iter()
        .map(|element| element.topic().to_owned())
        .collect();
    for topic in &topics {
        if let Err(error) = consumer.fetch_metadata(Some(topic), ASSIGN_METADATA_TIMEOUT) {
            debug!(%error, %topic, "No metadata before the assignment; the client looks it up itself.");
        }
    }
    consumer.assign(list)
}

/// While `dependencies` has the broker unreachable, asks it for metadata at most once a
/// second (a client reports errors, not recoveries; `last_probe` is when it last asked)
/// and records it reachable when it answers.
pub fn probe_broker<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    dependencies: &Dependencies,
    last_probe: &mut std::time::Instant,
) {
    let second = std::time::Duration::from_secs(1);
    if !dependencies.is_down(dependency::BROKER) || last_probe.elapsed() < second {
        return;
    }
    *last_probe = std::time::Instant::now();
    if client.fetch_metadata(None, second).is_ok() {
        dependencies.reachable(dependency::BROKER);
    }
}

/// A client's error callback: the broker going away is recorded in `dependencies` (and
/// logged once there), anything else is logged.
pub fn client_error(dependencies: &Dependencies, error: &KafkaError, reason: &str) {
    if is_transient(error) {
        dependencies.unreachable(dependency::BROKER, &reason);
    } else {
        error!(%error, reason, "Kafka client error.");
    }
}

/// A client's log callback: librdkafka's lines at their level, except failed connections
/// (`FAIL`), which an outage repeats many times a second and which the outage's own
/// record reports once: those at debug.
pub fn client_log(level: RDKafkaLogLevel, fac: &str, log_message: &str) {
    if fac == "FAIL" {
        debug!(target: "librdkafka", fac, "{log_message}");
        return;
    }
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => error!(target: "librdkafka", fac, "{log_message}"),
        RDKafkaLogLevel::Warning => warn!(target: "librdkafka", fac, "{log_message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            info!(target: "librdkafka", fac, "{log_message}");
        }
        RDKafkaLogLevel::Debug => debug!(target: "librdkafka", fac, "{log_message}"),
    }
}

/// Client callbacks that report the broker's reachability (for a producer, or a client
/// without callbacks of its own).
#[derive(Clone, Debug, Default)]
pub struct BrokerWatch {
    pub dependencies: Dependencies,
}

impl ClientContext for BrokerWatch {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        client_log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        client_error(&self.dependencies, &error, reason);
    }
}

impl ProducerContext for BrokerWatch {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &DeliveryResult<'_>, (): Self::DeliveryOpaque) {}
}
