//! Which of its dependencies (the broker, the database, the schema registry) a program
//! can reach, as it last saw them. A dependency that goes away makes the program not
//! ready (`/readyz`) while it stays live (`/healthz`); its going and coming back are each
//! logged once, and a program gives up only when one stays away longer than its
//! give-up time.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use prometheus::IntGaugeVec;
use tracing::{info, warn};

/// The dependencies a program names.
pub mod dependency {
    pub const BROKER: &str = "broker";
    pub const DATABASE: &str = "database";
    pub const REGISTRY: &str = "registry";
}

/// An unreachable dependency: since when, and the error that showed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outage {
    pub dependency: &'static str,
    pub since: Instant,
    pub error: String,
}

impl fmt::Display for Outage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} unreachable for {} s ({})",
            self.dependency,
            self.since.elapsed().as_secs(),
            self.error
        )
    }
}

/// The reachability of a program's dependencies, shared by its parts.
#[derive(Clone, Debug, Default)]
pub struct Dependencies {
    down: Arc<Mutex<BTreeMap<&'static str, Outage>>>,
    /// `habitat_dependency_up{dependency}`, when the program exports metrics.
    gauge: Option<IntGaugeVec>,
}

impl Dependencies {
    /// Dependencies reported through `gauge` (1 reachable, 0 not).
    pub fn with_gauge(gauge: IntGaugeVec) -> Self {
        Self {
            down: Arc::default(),
            gauge: Some(gauge),
        }
    }

    fn outages(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, Outage>> {
        self.down.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_gauge(&self, dependency: &str, up: bool) {
        if let Some(gauge) = &self.gauge {
            gauge.with_label_values(&[dependency]).set(i64::from(up));
        }
    }

    /// `dependency` could not be reached (logged when it was reachable until now).
    pub fn unreachable(&self, dependency: &'static str, error: &dyn fmt::Display) {
        let mut down = self.outages();
        if !down.contains_key(dependency) {
            warn!(dependency, %error, "Unreachable; waiting for it to come back.");
            _ = down.insert(
                dependency,
                Outage {
                    dependency,
                    since: Instant::now(),
                    error: error.to_string(),
                },
            );
            self.set_gauge(dependency, false);
        }
    }

    /// `dependency` answered (logged with the time it was away, when it was).
    pub fn reachable(&self, dependency: &'static str) {
        if let Some(outage) = self.outages().remove(dependency) {
            info!(
                dependency,
                away_ms = outage.since.elapsed().as_millis() as u64,
                "Reachable again."
            );
        }
        self.set_gauge(dependency, true);
    }

    /// Whether `dependency` is known to be unreachable.
    pub fn is_down(&self, dependency: &str) -> bool {
        self.outages().contains_key(dependency)
    }

    /// The longest current outage.
    pub fn longest(&self) -> Option<Outage> {
        self.outages().values().min_by_key(|o| o.since).cloned()
    }

    /// The longest current outage when it has lasted longer than `give_up`.
    pub fn given_up(&self, give_up: Duration) -> Option<Outage> {
        self.longest().filter(|o| o.since.elapsed() > give_up)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_lasts_from_the_first_failure_until_the_dependency_answers() {
        let deps = Dependencies::default();
        assert!(deps.longest().is_none());
        deps.unreachable(dependency::BROKER, &"all brokers down");
        let first = deps.longest().expect("an outage");
        deps.unreachable(dependency::BROKER, &"still down");
        assert_eq!(
            deps.longest(),
            Some(first.clone()),
            "the first failure counts"
        );
        assert!(deps.is_down(dependency::BROKER));
        assert!(deps.given_up(Duration::from_secs(60)).is_none());
        assert_eq!(
            deps.given_up(Duration::ZERO).map(|o| o.error),
            Some("all brokers down".into())
        );
        deps.reachable(dependency::BROKER);
        assert!(deps.longest().is_none());
        assert!(!deps.is_down(dependency::BROKER));
    }
}
