//! The sink's loop through outages: the broker probed back while it is away, and the
//! give-up once an outage outlasts `give_up_seconds`.

use std::time::Duration;

use habitat_runtime::health::dependency;
use rdkafka::consumer::Consumer;

use super::{Loop, SinkError};

impl Loop<'_> {
    /// A record arrived: the broker answers (again).
    pub(super) fn broker_answered(&mut self) {
        let dependencies = &self.sink.metrics.dependencies;
        if dependencies.is_down(dependency::BROKER) {
            dependencies.reachable(dependency::BROKER);
        }
    }

    /// While the broker is unreachable: probes it back, and gives up once an outage
    /// outlasts the give-up time.
    pub(super) fn watch_broker(&mut self) -> Result<(), SinkError> {
        let dependencies = &self.sink.metrics.dependencies;
        habitat_runtime::kafka::probe_broker(
            self.consumer.client(),
            dependencies,
            &mut self.last_probe,
        );
        let give_up = Duration::from_secs(self.sink.config.give_up_seconds);
        match dependencies.given_up(give_up) {
            Some(_) => Err(self.gave_up()),
            None => Ok(()),
        }
    }

    pub(super) fn gave_up(&self) -> SinkError {
        let outage = self
            .sink
            .metrics
            .dependencies
            .longest()
            .map_or_else(|| "a dependency unreachable".to_owned(), |o| o.to_string());
        SinkError::GaveUp(format!(
            "{outage}: gave up after {} s (give_up_seconds)",
            self.sink.config.give_up_seconds
        ))
    }
}
