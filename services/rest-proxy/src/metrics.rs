//! The proxy's metrics: requests by route and status, their durations, and the process's
//! own (`process_*`: CPU, memory, open files).

use std::time::Duration;

use axum::http::StatusCode;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};

/// The name of the request-duration histogram.
pub const REQUEST_SECONDS: &str = "habitat_http_request_duration_seconds";

/// Requests by route and status, and the registry `/metrics` renders.
#[derive(Clone)]
pub struct HttpMetrics {
    registry: Registry,
    requests: IntCounterVec,
    durations: HistogramVec,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        // `program` tells the proxy's requests from the registry's on one dashboard.
        let labels =
            std::collections::HashMap::from([("program".to_owned(), "rest-proxy".to_owned())]);
        let registry = Registry::new_custom(None, Some(labels)).expect("valid registry");
        let requests = IntCounterVec::new(
            Opts::new(
                "habitat_http_requests_total",
                "HTTP requests by route and status.",
            ),
            &["route", "status"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(requests.clone()))
            .expect("unique metric");
        let durations = HistogramVec::new(
            HistogramOpts::new(
                REQUEST_SECONDS,
                "Time from a request's arrival to its answer, by route template and status.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["route", "status"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(durations.clone()))
            .expect("unique metric");
        habitat_runtime::metrics::register_process(&registry);
        Self {
            registry,
            requests,
            durations,
        }
    }
}

impl HttpMetrics {
    /// Counts one answer of `route`.
    pub fn count(&self, route: &str, status: StatusCode) {
        self.requests
            .with_label_values(&[route, status.as_str()])
            .inc();
    }

    /// Observes one request's duration.
    pub fn observe(&self, route: &str, status: StatusCode, took: Duration) {
        self.durations
            .with_label_values(&[route, status.as_str()])
            .observe(took.as_secs_f64());
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}
