//! Prometheus metrics of a processor, and the `/metrics`, `/healthz`, `/readyz` server.
//! Every metric name is defined here, once.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use crate::health::Dependencies;
use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Metric names.
pub mod names {
    pub const RECORDS_IN: &str = "habitat_records_in_total";
    pub const RECORDS_PASSED: &str = "habitat_records_passed_total";
    pub const RECORDS_OUT: &str = "habitat_records_out_total";
    pub const DEAD_LETTERS: &str = "habitat_dead_letters_total";
    pub const TRANSACTIONS: &str = "habitat_transactions_total";
    pub const COMMIT_LATENCY: &str = "habitat_commit_latency_seconds";
    pub const END_TO_END_LATENCY: &str = "habitat_end_to_end_latency_seconds";
    pub const CONSUMER_LAG: &str = "habitat_consumer_lag";
    pub const STORE_ENTRIES: &str = "habitat_store_entries";
    pub const RESTORE_SECONDS: &str = "habitat_store_restore_seconds";
    pub const TIMERS_FIRED: &str = "habitat_timers_fired_total";
    pub const ASSIGNED_PARTITIONS: &str = "habitat_assigned_partitions";
    pub const DEPENDENCY_UP: &str = "habitat_dependency_up";
    pub const INVARIANT_BREAKS: &str = "habitat_invariant_breaks_total";
}

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The metrics of one processor process (label `processor` on every series).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    ready: Arc<AtomicBool>,
    /// The broker and the registry as the processor last reached them.
    pub dependencies: Dependencies,
    /// Records consumed (committed), by topic.
    pub records_in: IntCounterVec,
    /// Of the records consumed, those of types the processor does not read (committed
    /// without being decoded), by topic.
    pub records_passed: IntCounterVec,
    /// Records produced (committed), by topic — outputs, changelogs, dead letters.
    pub records_out: IntCounterVec,
    /// Records dead-lettered (committed), by error class.
    pub dead_letters: IntCounterVec,
    /// Transactions by outcome: committed, aborted.
    pub transactions: IntCounterVec,
    pub commit_latency: Histogram,
    /// From a record's `occurred_at` (its timestamp when it has no envelope) to the
    /// commit of its outputs.
    pub end_to_end_latency: Histogram,
    /// By topic and partition, from the client's statistics.
    pub consumer_lag: IntGaugeVec,
    /// By store, over the assigned partitions.
    pub store_entries: IntGaugeVec,
    /// Time to restore a store's assigned partitions.
    pub restore_seconds: HistogramVec,
    pub timers_fired: IntCounter,
    pub assigned_partitions: IntGauge,
    /// Invariants found broken before a commit, by invariant (the processor halts).
    pub invariant_breaks: IntCounterVec,
    /// Why the processor halted, when it did: `/readyz` says so.
    halted: Arc<std::sync::Mutex<Option<String>>>,
}

/// Adds the process's own metrics (`process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, `process_open_fds`…) to `registry`.
pub fn register_process(registry: &Registry) {
    let collector = prometheus::process_collector::ProcessCollector::for_self();
    if let Err(error) = registry.register(Box::new(collector)) {
        tracing::warn!(%error, "The process metrics could not be registered.");
    }
}

impl Metrics {
    pub fn new(processor: &str) -> Self {
        let labels = HashMap::from([("processor".to_owned(), processor.to_owned())]);
        let registry = Registry::new_custom(None, Some(labels)).expect("valid registry");
        register_process(&registry);
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("unique metric");
            metric
        };
        let histogram = |name: &str, help: &str| {
            let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
            let metric = Histogram::with_opts(opts).expect("valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("unique metric");
            metric
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("unique metric");
            metric
        };
        let restore_seconds = HistogramVec::new(
            HistogramOpts::new(names::RESTORE_SECONDS, "Time to restore a state store.")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["store"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(restore_seconds.clone()))
            .expect("unique metric");
        let timers_fired = IntCounter::new(names::TIMERS_FIRED, "Timers fired (committed).")
            .expect("valid metric");
        registry
            .register(Box::new(timers_fired.clone()))
            .expect("unique metric");
        let assigned_partitions =
            IntGauge::new(names::ASSIGNED_PARTITIONS, "Partition numbers assigned.")
                .expect("valid metric");
        registry
            .register(Box::new(assigned_partitions.clone()))
            .expect("unique metric");
        let dependencies = Dependencies::with_gauge(gauge(
            names::DEPENDENCY_UP,
            "1 while the dependency (broker, registry) answers, 0 while it is unreachable.",
            &["dependency"],
        ));
        let invariant_breaks = counter(
            names::INVARIANT_BREAKS,
            "Invariants found broken before a commit (the processor halts).",
            &["invariant"],
        );
        let transactions = counter(
            names::TRANSACTIONS,
            "Transactions by outcome.",
            &["outcome"],
        );
        // Both outcomes exported from the start, so a rate of aborts reads 0, not nothing.
        for outcome in ["committed", "aborted"] {
            _ = transactions.with_label_values(&[outcome]);
        }
        Self {
            records_in: counter(
                names::RECORDS_IN,
                "Records consumed and committed.",
                &["topic"],
            ),
            records_passed: counter(
                names::RECORDS_PASSED,
                "Records of types the processor does not read, committed undecoded.",
                &["topic"],
            ),
            records_out: counter(
                names::RECORDS_OUT,
                "Records produced and committed.",
                &["topic"],
            ),
            dead_letters: counter(names::DEAD_LETTERS, "Records dead-lettered.", &["class"]),
            transactions,
            commit_latency: histogram(names::COMMIT_LATENCY, "Time to commit a transaction."),
            end_to_end_latency: histogram(
                names::END_TO_END_LATENCY,
                "From occurred_at to the commit of the outputs.",
            ),
            consumer_lag: gauge(
                names::CONSUMER_LAG,
                "Records behind the end.",
                &["topic", "partition"],
            ),
            store_entries: gauge(
                names::STORE_ENTRIES,
                "Entries in a state store.",
                &["store"],
            ),
            restore_seconds,
            timers_fired,
            assigned_partitions,
            registry,
            ready: Arc::new(AtomicBool::new(false)),
            dependencies,
            invariant_breaks,
            halted: Arc::default(),
        }
    }

    /// Adds a metric of the program's own to those served.
    pub fn register(&self, metric: Box<dyn prometheus::core::Collector>) {
        if let Err(error) = self.registry.register(metric) {
            tracing::warn!(%error, "A metric could not be registered.");
        }
    }

    /// Marks the process halted (not ready, for good) and why.
    pub fn halt(&self, why: String) {
        self.set_ready(false);
        if let Ok(mut halted) = self.halted.lock() {
            *halted = Some(why);
        }
    }

    /// Why the process halted, if it did.
    pub fn halted(&self) -> Option<String> {
        self.halted.lock().ok().and_then(|h| h.clone())
    }

    /// Sets the consumer lag of the `inputs` partitions from a client's statistics.
    pub fn record_lag(&self, statistics: &rdkafka::Statistics, inputs: &[String]) {
        for (name, topic) in &statistics.topics {
            if !inputs.contains(name) {
                continue;
            }
            for (partition, stats) in &topic.partitions {
                if *partition >= 0 && stats.consumer_lag >= 0 {
                    self.consumer_lag
                        .with_label_values(&[name.as_str(), &partition.to_string()])
                        .set(stats.consumer_lag);
                }
            }
        }
    }

    /// Marks the process ready (assigned and restored) or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }

    /// The `/metrics`, `/healthz`, `/readyz` routes.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .with_state(self.clone())
    }

    /// Serves [`Metrics::router`] on `listen` until the runtime stops.
    pub async fn serve(self, listen: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let router = self.router();
        _ = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::error!(%error, "Metrics server stopped.");
            }
        });
        Ok(addr)
    }
}

async fn metrics(State(metrics): State<Metrics>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        metrics.render(),
    )
}

async fn readyz(State(metrics): State<Metrics>) -> impl IntoResponse {
    if let Some(why) = metrics.halted() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: halted: {why}\n"),
        )
    } else if let Some(outage) = metrics.dependencies.longest() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {outage}\n"),
        )
    } else if metrics.is_ready() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: joining or restoring\n".to_owned(),
        )
    }
}
