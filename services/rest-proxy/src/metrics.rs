//! The proxy's metrics: requests by route and status.

use axum::http::StatusCode;
use prometheus::{IntCounterVec, Opts, Registry, TextEncoder};

/// Requests by route and status, and the registry `/metrics` renders.
#[derive(Clone)]
pub struct HttpMetrics {
    registry: Registry,
    requests: IntCounterVec,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        let registry = Registry::new();
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
        Self { registry, requests }
    }
}

impl HttpMetrics {
    /// Counts one answer of `route`.
    pub fn count(&self, route: &str, status: StatusCode) {
        self.requests
            .with_label_values(&[route, status.as_str()])
            .inc();
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}
