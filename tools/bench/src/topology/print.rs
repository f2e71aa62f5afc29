//! The tables a topology run prints: every run's figures, what each process cost, and
//! where the latency comes from.

use super::*;

/// Where the latency of a run comes from: each record type's rows, slowest first.
pub(super) fn print_latency_by_type(outcome: &Outcome) {
    println!();
    println!(
        "Latency by record type in the last run ({}), from the posted event each row descends from:",
        outcome.scenario.label
    );
    println!("| record type | rows | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|");
    for (event_type, rows, p50, p99) in &outcome.latency_by_type {
        println!("| {event_type} | {rows} | {p50:.0} | {p99:.0} |");
    }
}

/// Year by year, for runs of several fiscal years: what grows with history shows here.
pub(super) fn print_years(outcomes: &[Outcome]) {
    for outcome in outcomes.iter().filter(|o| !o.years.is_empty()) {
        println!();
        println!("Year by year ({}):", outcome.scenario.label);
        let programs: Vec<&str> = outcome.years[0]
            .resident_mib
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        println!(
            "| year | events | seconds | events/s | CPU s per 1,000 events | of which Postgres | books check s (CPU s), breaks | {} |",
            programs
                .iter()
                .map(|p| format!("{p} MiB"))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        println!(
            "|---:|---:|---:|---:|---:|---:|---:|{}",
            "---:|".repeat(programs.len())
        );
        for year in &outcome.years {
            let memory: Vec<String> = year
                .resident_mib
                .iter()
                .map(|(_, mib)| format!("{mib:.0}"))
                .collect();
            let books = year.books.as_ref().map_or_else(String::new, |check| {
                format!(
                    "{:.2} ({:.2}), {}",
                    check.seconds, check.cpu_seconds, check.breaks
                )
            });
            println!(
                "| {} | {} | {:.1} | {:.0} | {:.3} | {:.3} | {books} | {} |",
                year.year,
                year.events,
                year.seconds,
                year.events as f64 / year.seconds,
                year.cpu_per_1000(None),
                year.cpu_per_1000(Some(POSTGRES)),
                memory.join(" | ")
            );
        }
        println!();
        println!("Postgres' largest tables after the run:");
        println!(
            "| table | live rows (statistics) | MiB with indexes | autovacuums | autoanalyzes |"
        );
        println!("|---|---:|---:|---:|---:|");
        for (table, rows, mib, vacuums, analyzes) in &outcome.tables {
            println!("| {table} | {rows} | {mib:.0} | {vacuums} | {analyzes} |");
        }
    }
}

pub(super) fn print_table(outcomes: &[Outcome]) {
    println!();
    println!(
        "| run | data | events posted | rows in Postgres | seconds | events/s end to end | events/s of every repetition | year phase events/s | p50 ms | p95 ms | p99 ms | CPU s per 1,000 events | late changes |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for o in outcomes {
        let cpu: f64 = o.costs.iter().map(|c| c.cpu_seconds).sum();
        let repetitions: Vec<String> = o.repetitions.iter().map(|r| format!("{r:.0}")).collect();
        println!(
            "| {} | ×{} | {} | {} | {:.1} | {:.0} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {} |",
            o.scenario.label,
            o.scenario.scale,
            o.posted,
            o.rows,
            o.seconds,
            o.events_per_second(),
            repetitions.join(", "),
            o.year_events as f64 / o.year_seconds,
            o.latency_ms[0],
            o.latency_ms[1],
            o.latency_ms[2],
            cpu / (o.posted as f64 / 1000.0),
            o.late_changes,
        );
    }
    let (Some(first), Some(alo)) = (
        outcomes.first(),
        outcomes.iter().find(|o| !o.scenario.exactly_once),
    ) else {
        print_costs(outcomes);
        return;
    };
    println!();
    println!(
        "Exactly-once against at-least-once: {:.0} vs {:.0} events/s ({:+.1} %).",
        first.events_per_second(),
        alo.events_per_second(),
        (first.events_per_second() / alo.events_per_second() - 1.0) * 100.0
    );
    print_costs(outcomes);
}

fn print_costs(outcomes: &[Outcome]) {
    let Some(first) = outcomes.first() else {
        return;
    };
    println!();
    println!(
        "Cost per process in the first run ({}):",
        first.scenario.label
    );
    println!("| process | CPU s | CPU s per 1,000 events | peak memory MiB |");
    println!("|---|---:|---:|---:|");
    for cost in &first.costs {
        println!(
            "| {} | {:.1} | {:.3} | {} |",
            cost.name,
            cost.cpu_seconds,
            cost.cpu_seconds / (first.posted as f64 / 1000.0),
            cost.peak_mib
                .map_or_else(|| "—".to_owned(), |m| format!("{m:.0}"))
        );
    }
    if let Some((produce, consume)) = first.ceiling {
        println!();
        println!(
            "devbroker's raw ceiling on the same broker (200,000 × 200 B): produce {produce:.0} records/s, consume {consume:.0} records/s."
        );
    }
}
