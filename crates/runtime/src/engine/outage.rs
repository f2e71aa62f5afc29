//! Outages of the broker and the schema registry: waited out, not fatal. While one lasts
//! the instance is not ready; it stops only when one outlasts `give_up_seconds`.

use super::*;
use crate::health::Outage;

impl<P, C> Running<'_, P, C>
where
    P: Processor,
    C: Codec<In = P::In, Out = P::Out>,
{
    /// While the broker is unreachable: probes it back, and stops once the outage outlasts
    /// the give-up time.
    pub(super) fn watch_broker(&mut self) -> Result<(), EngineError> {
        let dependencies = &self.engine.metrics.dependencies;
        crate::kafka::probe_broker(self.consumer.client(), dependencies, &mut self.last_probe);
        if dependencies.is_down(dependency::BROKER) {
            return self.give_up_after_outage();
        }
        Ok(())
    }

    /// Waits before the next try of a registry that did not answer; stops once the
    /// registry has been away longer than the give-up time.
    pub(super) fn await_registry(&mut self, reason: &str) -> Result<(), EngineError> {
        let dependencies = &self.engine.metrics.dependencies;
        dependencies.unreachable(dependency::REGISTRY, &reason);
        let policy = self.engine.config.retry_policy();
        let delays = self.registry_backoff.get_or_insert_with(|| policy.delays());
        match delays.next() {
            Some(delay) => {
                std::thread::sleep(delay);
                Ok(())
            }
            None => self.give_up_after_outage(),
        }
    }

    /// A decode that succeeded: the registry answers again.
    pub(super) fn registry_answered(&mut self) {
        if self.registry_backoff.take().is_some() {
            self.engine
                .metrics
                .dependencies
                .reachable(dependency::REGISTRY);
        }
    }

    fn give_up_after_outage(&self) -> Result<(), EngineError> {
        let give_up = Duration::from_secs(self.engine.config.give_up_seconds);
        match self.engine.metrics.dependencies.given_up(give_up) {
            Some(outage) => Err(gave_up(&outage, give_up)),
            None => Ok(()),
        }
    }
}

fn gave_up(outage: &Outage, give_up: Duration) -> EngineError {
    EngineError::Stopped(format!(
        "{outage}: gave up after {} s (give_up_seconds)",
        give_up.as_secs()
    ))
}
