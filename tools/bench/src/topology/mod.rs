//! `habitat bench`: the whole topology — the four processors and the Postgres sink as
//! processes on devbroker and Postgres — under a synthetic year of many cooperatives.
//!
//! Each run starts its own devbroker, Postgres (durable) and schema registry, starts the
//! processors and the sink (optimised builds), waits until each is ready, then posts the
//! workload of [`crate::load`] straight to the context topics. It measures until the last
//! derived row is in Postgres:
//!
//! - events/s end to end: events posted ÷ (first post → the last row committed);
//! - latency: for every row in `event_log`, the commit time of the transaction that wrote
//!   it (`pg_xact_commit_timestamp`) minus the `occurred_at` of the posted event it
//!   descends from (derived records carry its id as `correlation_id`);
//! - CPU seconds per 1,000 posted events and peak memory (VmHWM) of each process.
//!
//! Runs: exactly-once with one instance each (and devbroker's raw ceiling on the same
//! broker); at-least-once; 2 and 4 instances; 2× and 4× the data; and exactly-once at half
//! the first run's rate, for the latency under load that leaves headroom.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Args;
use contracts::topology::Topology;
use devstack::process::{Guardian, free_port, sibling_binary};
use habitat_runtime::avro::AvroCodec;
use sqlx::PgPool;

use habitat::{progress::Progress, stack::PROCESSORS, topics::Mode};

use crate::{
    broker::{self, BenchStack, BrokerBench, machine, peak_memory_mib},
    load::{self, Poster, Shape},
};

mod costs;
mod latency;
mod print;
mod record;
pub(crate) mod service;
mod waits;

use costs::{BooksCheck, Others, POSTGRES, Year, cpu_all, idle_cost};
use print::{print_latency_by_type, print_table, print_years};
use record::{command_line, commit, figures};
use service::Service;
use waits::{Waits, quiet_count};

#[derive(Clone, Debug, Args)]
pub struct TopologyBench {
    /// Cooperatives (tenants).
    #[arg(long, default_value_t = 50)]
    pub tenants: usize,
    /// Members per cooperative.
    #[arg(long, default_value_t = 50)]
    pub members: usize,
    /// Contributions per member (each submitted, then approved).
    #[arg(long, default_value_t = 20)]
    pub contributions: usize,
    /// Partitions of each context topic.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// Only the first run (exactly-once, one instance each, the data once).
    #[arg(long)]
    pub quick: bool,
    /// Post the first run at this many events/s instead of as fast as it goes (the
    /// latency at a given load); the half-rate run then halves it.
    #[arg(long)]
    pub rate: Option<f64>,
    /// A YAML file of runtime settings every processor starts with (`--config`), to
    /// measure other settings than the defaults.
    #[arg(long)]
    pub processor_config: Option<PathBuf>,
    /// A YAML file of settings the sink starts with (`--config`).
    #[arg(long)]
    pub sink_config: Option<PathBuf>,
    /// Post through the REST proxy (a release `rest-proxy` process, batches of 100 over
    /// eight connections) instead of producing straight to the context topics.
    #[arg(long)]
    pub via_proxy: bool,
    /// Measure every run this many times and report the median one (by events/s), with
    /// the range of all: on a shared two-core machine runs of the same settings differ by
    /// up to 20 %.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
    /// Fiscal years of the same cooperatives measured one after another in each run, every
    /// year through every phase, with events/s, CPU and resident memory per year: whether
    /// anything grows with history (`--years 100` posts 10.5 million events at the
    /// default shape).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub years: u32,
    /// After the warm-up, leave the stack alone this many seconds and print what each
    /// process costs doing nothing (% of one core): what an idle deployment burns.
    #[arg(long)]
    pub idle: Option<u64>,
    /// Also write every figure of every run to this JSON file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Append this measurement (events/s of the first run; p99 of the half-load run, when
    /// measured) to a history such as docs/bench-history.json and redraw its chart beside
    /// it (`.svg`).
    #[arg(long)]
    pub history: Option<PathBuf>,
}

/// One run's settings.
#[derive(Clone, Debug)]
struct Scenario {
    label: String,
    exactly_once: bool,
    instances: usize,
    scale: usize,
    rate: Option<f64>,
    ceiling: bool,
}

const PROXY: &str = "rest-proxy";

/// Connections the load generator posts to the proxy over.
const PROXY_CLIENTS: usize = 8;

/// What one process cost in a run.
struct Cost {
    name: String,
    cpu_seconds: f64,
    peak_mib: Option<f64>,
}

/// What one run measured.
struct Outcome {
    scenario: Scenario,
    posted: usize,
    rows: i64,
    seconds: f64,
    year_seconds: f64,
    year_events: usize,
    latency_ms: [f64; 3],
    /// (record type, rows, p50 ms, p99 ms) of the rows in Postgres, slowest p99 first.
    latency_by_type: Vec<(String, i64, f64, f64)>,
    /// Contributions the aggregator saw after their period's close (the workload posts
    /// every contribution before the close, so anything here was merged out of order).
    late_changes: i64,
    costs: Vec<Cost>,
    ceiling: Option<(f64, f64)>,
    /// events/s of every repetition of the run, lowest first.
    repetitions: Vec<f64>,
    /// Each fiscal year's figures, when a run measures several.
    years: Vec<Year>,
    /// After a run of several years, the largest tables of the sink's schema: (table, live
    /// rows, MiB with indexes, autovacuums, autoanalyzes).
    tables: Vec<(String, i64, f64, i64, i64)>,
}

impl Outcome {
    fn events_per_second(&self) -> f64 {
        self.posted as f64 / self.seconds
    }
}

fn scenarios(args: &TopologyBench) -> Vec<Scenario> {
    let run = |label: &str, exactly_once: bool, instances: usize, scale: usize| Scenario {
        label: label.to_owned(),
        exactly_once,
        instances,
        scale,
        rate: None,
        ceiling: false,
    };
    let first = match args.rate {
        Some(rate) => format!("exactly-once, 1 instance each, posted at {rate:.0}/s"),
        None => "exactly-once, 1 instance each".to_owned(),
    };
    let mut all = vec![Scenario {
        ceiling: true,
        rate: args.rate,
        ..run(&first, true, 1, 1)
    }];
    if !args.quick {
        all.push(run("at-least-once, 1 instance each", false, 1, 1));
        all.push(run("exactly-once, 2 instances each", true, 2, 1));
        all.push(run("exactly-once, 4 instances each", true, 4, 1));
        all.push(run("exactly-once, 2× the data", true, 1, 2));
        all.push(run("exactly-once, 4× the data", true, 1, 4));
    }
    all
}

pub fn run(args: &TopologyBench) -> Result<()> {
    let shape = Shape {
        prefix: "bench-coop",
        tenants: args.tenants,
        members: args.members,
        contributions: args.contributions,
    };
    println!(
        "Whole topology: {} cooperatives × {} members × {} contributions (submitted and approved), {} partitions; durable Postgres.",
        shape.tenants, shape.members, shape.contributions, args.partitions
    );
    if args.years > 1 {
        println!(
            "{} fiscal years of the same cooperatives one after another in each run.",
            args.years
        );
    }
    if args.via_proxy {
        println!(
            "Posted through the REST proxy: batches of up to {} events over {PROXY_CLIENTS} connections, each cooperative's events on one of them in order.",
            load::PROXY_BATCH
        );
    }
    println!("{}", machine());
    let mut outcomes = Vec::new();
    for scenario in scenarios(args) {
        eprintln!("Run: {} ×{} data…", scenario.label, scenario.scale);
        outcomes.push(measure_median(args, shape, &scenario)?);
    }
    // Half the first run's rate: the latency with headroom.
    let half = args.rate.unwrap_or_else(|| outcomes[0].events_per_second()) / 2.0;
    if !args.quick {
        let scenario = Scenario {
            label: format!("exactly-once, 1 instance each, posted at {half:.0}/s (half)"),
            exactly_once: true,
            instances: 1,
            scale: 1,
            rate: Some(half),
            ceiling: false,
        };
        eprintln!("Run: {}…", scenario.label);
        outcomes.push(measure_median(args, shape, &scenario)?);
    }
    print_table(&outcomes);
    print_years(&outcomes);
    if let Some(last) = outcomes.last() {
        print_latency_by_type(last);
    }
    if let Some(path) = &args.json {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&figures(args, &outcomes))? + "\n",
        )
        .with_context(|| format!("write {}", path.display()))?;
        eprintln!("Figures written to {}.", path.display());
    }
    if let Some(path) = &args.history {
        let half_load = (!args.quick).then(|| outcomes.last()).flatten();
        crate::history::record(
            path,
            crate::history::Entry {
                commit: commit(),
                date: Some(chrono::Utc::now().format("%Y-%m-%d").to_string()),
                command: command_line(),
                events_per_second: outcomes[0].events_per_second(),
                p99_ms: half_load.map(|o| o.latency_ms[2]),
            },
        )?;
    }
    Ok(())
}

fn measure(args: &TopologyBench, base: Shape, scenario: Scenario) -> Result<Outcome> {
    let shape = Shape {
        tenants: base.tenants * scenario.scale,
        ..base
    };
    let stack = BenchStack::start("topology", args.partitions)?;
    let (runtime, bootstrap, registry) = (&stack.runtime, &stack.bootstrap, &stack.registry);
    // Every topic of topics.yaml, the dead-letter topics the sink reads included.
    _ = habitat::topics::apply(bootstrap, &Topology::embedded(), "dev", Mode::default())?;
    stack.cluster.create_database("sink")?;
    let database = stack.cluster.url("sink");
    let logs = service::logs_dir()?;

    let common = [
        ("HABITAT_BOOTSTRAP_SERVERS", bootstrap.clone()),
        ("HABITAT_SCHEMA_REGISTRY_URL", registry.clone()),
    ];
    let mut processor_args = service::config_args(args.processor_config.as_deref());
    if !scenario.exactly_once {
        processor_args.push("--at-least-once".to_owned());
    }
    let sink_args = service::config_args(args.sink_config.as_deref());
    let mut services = Vec::new();
    for instance in 0..scenario.instances {
        for name in PROCESSORS {
            let mut env = common.to_vec();
            env.push(("HABITAT_INSTANCE_ID", instance.to_string()));
            services.push(Service::start(
                name,
                instance,
                &env,
                &processor_args,
                &logs,
            )?);
        }
        let mut sink_env = common.to_vec();
        sink_env.push(("HABITAT_DATABASE_URL", database.clone()));
        services.push(Service::start(
            "postgres-sink",
            instance,
            &sink_env,
            &sink_args,
            &logs,
        )?);
    }
    // Through the proxy: its address and key.
    let proxy = if args.via_proxy {
        let (keys_url, token) = stack.proxy_key()?;
        let mut env = common.to_vec();
        env.push(("HABITAT_DATABASE_URL", keys_url));
        env.push(("HABITAT_MAX_BATCH_EVENTS", load::PROXY_BATCH.to_string()));
        let service = Service::start(PROXY, 0, &env, &[], &logs)?;
        let url = format!("http://127.0.0.1:{}", service.metrics);
        services.push(service);
        Some((url, token))
    } else {
        None
    };
    let waited = Instant::now();
    while !services.iter().all(|s| s.ready(runtime)) {
        // A program that failed to start (a port taken, a bad setting) says why in its log;
        // another one answering on its port must not pass for it.
        if let Some(gone) = services.iter().find(|s| s.exited()) {
            bail!(
                "{} exited while starting (its log is in {})",
                gone.name,
                logs.display()
            );
        }
        if waited.elapsed() > Duration::from_secs(120) {
            bail!(
                "the processors were not ready within 120 s (logs in {})",
                logs.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // One connection, whose backend's CPU is the bench's own (polling for rows) and is
    // left out of Postgres' figure: the tables it scans grow over a run of many years.
    // Without parallel workers while the figures are measured: a worker is a process of
    // its own, whose CPU would count as Postgres' (counting the log's rows at the end of a
    // run was ~6 % of the figure). The queries after the measurement may use them again.
    let pool = runtime.block_on(
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("SET max_parallel_workers_per_gather = 0")
                        .execute(conn)
                        .await
                        .map(drop)
                })
            })
            .connect(&database),
    )?;
    let others = Others {
        postmaster: stack.cluster.postmaster_pid()?,
        harness: runtime
            .block_on(sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&pool))?,
        broker: stack.broker_pid(),
        me: i32::try_from(std::process::id())?,
    };
    let mut poster = match &proxy {
        Some((url, token)) => {
            Poster::via_proxy(url, token, PROXY_CLIENTS, runtime.handle(), scenario.rate)?
        }
        None => {
            let codec = AvroCodec::new(registry, runtime.handle().clone())?;
            Poster::new(bootstrap, codec, args.partitions, scenario.rate)?
        }
    };
    let waits = Waits {
        runtime,
        pool: &pool,
        logs: &logs,
        services: &services,
    };

    // A small year first, through every phase and not measured: every process has
    // connected, prepared its statements and filled its caches before the clock starts.
    waits.year(&mut poster, WARM_UP, 2025)?;
    let warm_up_events = poster.posted;
    if let Some(seconds) = args.idle {
        println!("\nIdle for {seconds} s after the warm-up, nothing posted: % of one core");
        println!("\n| process | % of a core |\n|---|---:|");
        for (name, percent) in idle_cost(&services, &others, Duration::from_secs(seconds)) {
            println!("| {name} | {percent:.2} |");
        }
    }

    let before: Vec<f64> = cpu_all(&services, &others);
    let started_at = chrono::Utc::now();
    let mut year_seconds = 0.0;
    let mut years = Vec::new();
    for y in 0..args.years {
        let year = 2025 + i32::try_from(y)?;
        let (posted, cpu, clock) = (poster.posted, cpu_all(&services, &others), Instant::now());
        // With `pg_stat_statements` loaded: Postgres' statements over the measured years, or
        // with 20 years or more in the first ten years and in the last ten, one table each
        // (what grows with the tables).
        let compared = compared_years(args.years);
        if y == 0 || (compared && y == args.years - 10) {
            runtime.block_on(crate::sink::reset_statements(&pool))?;
        }
        let first_phase = waits.year(&mut poster, shape, year)?;
        if compared && (y == 9 || y == args.years - 1) {
            let title = format!("Postgres' statements in the ten years to {year}:");
            runtime.block_on(crate::sink::print_statements(&pool, &title))?;
        }
        if y == 0 {
            year_seconds = first_phase;
        }
        if args.years > 1 {
            let mut figures = Year::measured(
                (year, poster.posted - posted, clock.elapsed().as_secs_f64()),
                &services,
                &others,
                &cpu,
            );
            // Outside the year's figures: the next year's clock starts after it.
            figures.books = Some(BooksCheck::run(runtime, &pool, others.harness)?);
            eprintln!(
                "  {year}: {} events, {:.0} events/s, {:.3} CPU-s per 1,000 events",
                figures.events,
                figures.events as f64 / figures.seconds,
                figures.cpu_per_1000(None)
            );
            years.push(figures);
        }
    }
    // The last rows of a transaction's other topics follow within a batch or two.
    let rows = quiet_count(runtime, &pool)?;
    let after: Vec<f64> = cpu_all(&services, &others);
    runtime.block_on(sqlx::query("RESET max_parallel_workers_per_gather").execute(&pool))?;
    if !compared_years(args.years) {
        runtime.block_on(crate::sink::print_statements(
            &pool,
            "Postgres' statements over the measured years:",
        ))?;
    }

    let measured = format!("{}%", shape.prefix);
    let (seconds, latency_ms, latency_by_type) =
        runtime.block_on(latency::measured(&pool, &measured, started_at))?;
    let tables = if args.years > 1 {
        runtime.block_on(
            sqlx::query_as(
                "SELECT relname::text, n_live_tup,
                        pg_total_relation_size(relid)::float8 / 1048576,
                        autovacuum_count, autoanalyze_count
                   FROM pg_stat_user_tables WHERE schemaname = 'habitat'
                  ORDER BY pg_total_relation_size(relid) DESC LIMIT 8",
            )
            .fetch_all(&pool),
        )?
    } else {
        Vec::new()
    };
    let late_changes: i64 = runtime.block_on(
        sqlx::query_scalar("SELECT count(*) FROM habitat.late_changes WHERE tenant_id LIKE $1")
            .bind(&measured)
            .fetch_one(&pool),
    )?;

    let mut costs: Vec<Cost> = Vec::new();
    for (i, service) in services.iter().enumerate() {
        let cpu_seconds = after[i] - before[i];
        let peak = peak_memory_mib(service.pid);
        match costs.iter_mut().find(|c| c.name == service.name) {
            Some(cost) => {
                cost.cpu_seconds += cpu_seconds;
                cost.peak_mib = cost.peak_mib.map(|p| p.max(peak));
            }
            None => costs.push(Cost {
                name: service.name.clone(),
                cpu_seconds,
                peak_mib: Some(peak),
            }),
        }
    }
    let n = services.len();
    let broker_peak = peak_memory_mib(stack.broker_pid());
    costs.push(Cost {
        name: POSTGRES.to_owned(),
        cpu_seconds: after[n] - before[n],
        peak_mib: None,
    });
    costs.push(Cost {
        name: "devbroker".to_owned(),
        cpu_seconds: after[n + 1] - before[n + 1],
        peak_mib: Some(broker_peak),
    });
    costs.push(Cost {
        name: "load generator".to_owned(),
        cpu_seconds: after[n + 2] - before[n + 2],
        peak_mib: None,
    });
    drop(services);

    let ceiling = if scenario.ceiling {
        let broker_args = BrokerBench {
            records: 200_000,
            size: 200,
            partitions: args.partitions,
            bootstrap: Some(bootstrap.clone()),
            kafka: Vec::new(),
        };
        let topic = format!("ceiling-{}", uuid::Uuid::new_v4().simple());
        habitat::kafka::ensure_topic(bootstrap, &topic, args.partitions)?;
        let produced = broker::produce(bootstrap, &topic, &broker_args)?;
        let consumed = broker::consume(bootstrap, &topic, &broker_args)?;
        Some((produced.per_second(), consumed.per_second()))
    } else {
        None
    };
    Ok(Outcome {
        scenario,
        posted: poster.posted - warm_up_events,
        rows,
        seconds,
        year_seconds,
        year_events: shape.year_events(),
        latency_ms,
        latency_by_type,
        late_changes,
        costs,
        ceiling,
        repetitions: Vec::new(),
        years,
        tables,
    })
}

/// Measures `scenario` `args.repeat` times; the median run (by events/s), with the
/// events/s of every run.
fn measure_median(args: &TopologyBench, shape: Shape, scenario: &Scenario) -> Result<Outcome> {
    let mut runs = Vec::new();
    for repetition in 1..=args.repeat {
        let outcome = measure(args, shape, scenario.clone())?;
        eprintln!(
            "  {:.0} events/s, p99 {:.0} ms{}",
            outcome.events_per_second(),
            outcome.latency_ms[2],
            if args.repeat > 1 {
                format!(" ({repetition} of {})", args.repeat)
            } else {
                String::new()
            }
        );
        runs.push(outcome);
    }
    runs.sort_by(|a, b| a.events_per_second().total_cmp(&b.events_per_second()));
    let repetitions: Vec<f64> = runs.iter().map(Outcome::events_per_second).collect();
    let mut median = runs.swap_remove(runs.len() / 2);
    median.repetitions = repetitions;
    Ok(median)
}

/// The cooperative the warm-up year is posted for.
const WARM_UP: Shape = Shape {
    prefix: "bench-warmup",
    tenants: 1,
    members: 5,
    contributions: 2,
};

/// The programs' log filter: `HABITAT_BENCH_LOG` (e.g. `warn,habitat_runtime=debug` for
/// every commit), else warnings only.
fn log_filter() -> String {
    std::env::var("HABITAT_BENCH_LOG").unwrap_or_else(|_| "warn".to_owned())
}

/// Runs long enough to compare Postgres' statements in their first ten years and last ten.
fn compared_years(years: u32) -> bool {
    years >= 20
}
