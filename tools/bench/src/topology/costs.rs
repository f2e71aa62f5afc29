//! What a run counts, process by process: CPU of every service, Postgres (exited backends
//! included, the bench's own left out), devbroker and the load generator; and, over several
//! fiscal years, each year's figures.

use super::Service;
use crate::broker::{cpu_time, resident_memory_mib, tree_cpu_time};

/// Postgres' name in the figures.
pub(super) const POSTGRES: &str = "Postgres (all backends)";

/// What one fiscal year of a run measured.
pub(super) struct Year {
    pub(super) year: i32,
    pub(super) events: usize,
    pub(super) seconds: f64,
    /// CPU seconds of each process in the year: (name, seconds), instances summed.
    pub(super) cpu_seconds: Vec<(String, f64)>,
    /// Resident memory (VmRSS) of each program after the year, MiB: (name, MiB), the
    /// instances of a program summed.
    pub(super) resident_mib: Vec<(String, f64)>,
    /// The sink's check of the books run once after the year, outside its measurement.
    pub(super) books: Option<BooksCheck>,
}

/// One run of the check the sink makes of the books every `books_check_seconds`
/// (`invariant_breaks_all` counted by invariant), on a quiet machine.
pub(super) struct BooksCheck {
    pub(super) seconds: f64,
    /// CPU seconds of the backend that ran it.
    pub(super) cpu_seconds: f64,
    /// Breaks found (0 when the books are right).
    pub(super) breaks: i64,
}

impl BooksCheck {
    /// Runs the check on `pool`'s one connection, whose backend is `backend`.
    pub(super) fn run(
        runtime: &tokio::runtime::Runtime,
        pool: &sqlx::PgPool,
        backend: i32,
    ) -> anyhow::Result<Self> {
        let sql = postgres_sink::books::breaks_by_invariant("habitat");
        let (cpu, clock) = (cpu_time(backend)?, std::time::Instant::now());
        let counts: Vec<(String, i64)> = runtime.block_on(sqlx::query_as(&sql).fetch_all(pool))?;
        Ok(Self {
            seconds: clock.elapsed().as_secs_f64(),
            cpu_seconds: (cpu_time(backend)? - cpu).as_secs_f64(),
            breaks: counts.iter().map(|(_, count)| count).sum(),
        })
    }
}

impl Year {
    /// The figures of fiscal year `year` of `events` events that took `seconds`, from every
    /// process's CPU seconds at its start (`cpu_before`, as [`cpu_all`] gives them) and the
    /// programs' resident memory now.
    pub(super) fn measured(
        (year, events, seconds): (i32, usize, f64),
        services: &[Service],
        others: &Others,
        cpu_before: &[f64],
    ) -> Self {
        let programs = services.iter().map(|s| (s.name.as_str(), s.pid));
        let resident_mib = by_name(
            programs
                .chain([("devbroker", others.broker)])
                .map(|(name, pid)| (name, resident_memory_mib(pid))),
        );
        let spent = cpu_all(services, others)
            .into_iter()
            .zip(cpu_before)
            .map(|(after, before)| after - before);
        Self {
            year,
            events,
            seconds,
            cpu_seconds: by_name(cpu_names(services).zip(spent)),
            resident_mib,
            books: None,
        }
    }

    /// CPU seconds per 1,000 events of one process (`Some(name)`) or of all.
    pub(super) fn cpu_per_1000(&self, process: Option<&str>) -> f64 {
        let seconds: f64 = self
            .cpu_seconds
            .iter()
            .filter(|(name, _)| process.is_none_or(|p| p == name))
            .map(|(_, s)| s)
            .sum();
        seconds * 1000.0 / self.events as f64
    }
}

/// Figures of processes summed by name (the instances of a program), in first-seen order.
pub(super) fn by_name<'a>(figures: impl Iterator<Item = (&'a str, f64)>) -> Vec<(String, f64)> {
    let mut summed: Vec<(String, f64)> = Vec::new();
    for (name, figure) in figures {
        match summed.iter_mut().find(|(n, _)| n == name) {
            Some((_, sum)) => *sum += figure,
            None => summed.push((name.to_owned(), figure)),
        }
    }
    summed
}

/// Each program's CPU over `window` while the caller posts nothing, in % of one core
/// (instances summed), in [`cpu_all`]'s order.
pub(super) fn idle_cost(
    services: &[Service],
    others: &Others,
    window: std::time::Duration,
) -> Vec<(String, f64)> {
    let before = cpu_all(services, others);
    std::thread::sleep(window);
    let percent = cpu_all(services, others)
        .into_iter()
        .zip(before)
        .map(|(after, before)| (after - before) * 100.0 / window.as_secs_f64());
    by_name(cpu_names(services).zip(percent))
}

/// The names of [`cpu_all`]'s figures, in its order.
fn cpu_names(services: &[Service]) -> impl Iterator<Item = &str> {
    services
        .iter()
        .map(|s| s.name.as_str())
        .chain([POSTGRES, "devbroker", "load generator"])
}

/// The processes a run counts besides its services.
pub(super) struct Others {
    pub(super) postmaster: i32,
    /// The backend of the bench's own connection, left out of Postgres'.
    pub(super) harness: i32,
    pub(super) broker: i32,
    /// This process: the load generator.
    pub(super) me: i32,
}

/// CPU seconds so far of every service, then Postgres (the harness's backend left out),
/// devbroker and this process.
pub(super) fn cpu_all(services: &[Service], others: &Others) -> Vec<f64> {
    let postgres = tree_cpu_time(others.postmaster)
        .saturating_sub(cpu_time(others.harness).unwrap_or_default());
    services
        .iter()
        .map(|s| cpu_time(s.pid).unwrap_or_default())
        .chain([
            postgres,
            cpu_time(others.broker).unwrap_or_default(),
            cpu_time(others.me).unwrap_or_default(),
        ])
        .map(|d| d.as_secs_f64())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_summed_by_program_in_first_seen_order() {
        let figures = [("sink", 1.5), ("aggregator", 2.0), ("sink", 0.5)];
        assert_eq!(
            by_name(figures.into_iter()),
            vec![("sink".to_owned(), 2.0), ("aggregator".to_owned(), 2.0)]
        );
    }

    #[test]
    fn a_year_gives_cpu_per_thousand_events_of_one_process_or_all() {
        let year = Year {
            year: 2025,
            events: 2_000,
            seconds: 1.0,
            cpu_seconds: vec![(POSTGRES.to_owned(), 0.05), ("sink".to_owned(), 0.03)],
            resident_mib: Vec::new(),
            books: None,
        };
        assert!((year.cpu_per_1000(None) - 0.04).abs() < 1e-12);
        assert!((year.cpu_per_1000(Some(POSTGRES)) - 0.025).abs() < 1e-12);
    }
}
