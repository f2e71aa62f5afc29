//! The relay's metrics, served beside the runtime's on `/metrics`.

use habitat_runtime::metrics::Metrics;
use prometheus::{IntCounter, IntGauge};

/// The relay's own metrics, served beside the runtime's.
#[derive(Clone)]
pub(crate) struct RelayMetrics {
    pub(crate) pending: IntGauge,
    pub(crate) lag_seconds: IntGauge,
    pub(crate) published: IntCounter,
    pub(crate) dead_letters: IntCounter,
    pub(crate) standby: IntGauge,
}

impl RelayMetrics {
    pub(crate) fn new(metrics: &Metrics) -> Self {
        let gauge = |name: &str, help: &str| {
            let gauge = IntGauge::new(name, help).expect("a valid metric");
            metrics.register(Box::new(gauge.clone()));
            gauge
        };
        let counter = |name: &str, help: &str| {
            let counter = IntCounter::new(name, help).expect("a valid metric");
            metrics.register(Box::new(counter.clone()));
            counter
        };
        Self {
            pending: gauge(
                "habitat_outbox_pending",
                "Rows in the outbox not yet published.",
            ),
            lag_seconds: gauge(
                "habitat_outbox_lag_seconds",
                "Age of the oldest row not yet published.",
            ),
            published: counter(
                "habitat_outbox_published_total",
                "Events published (committed).",
            ),
            dead_letters: counter(
                "habitat_outbox_dead_letters_total",
                "Rows refused by the REST proxy's rules and kept as dead letters.",
            ),
            standby: gauge(
                "habitat_outbox_standby",
                "1 while another relay holds this outbox and this one waits.",
            ),
        }
    }
}
