//! `habitat-bench`: the benchmarks (`habitat bench` runs it; `./habitat bench` builds it
//! optimised first). With no part named, the whole topology.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use habitat_bench::{broker, history, log, outbox, proxy, restore, runtime, sink, state, topology};

#[derive(Debug, Parser)]
#[command(
    name = "habitat bench",
    bin_name = "habitat bench",
    version,
    about = "Measure Habitat Streams (run optimised builds: ./habitat bench ...).",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    part: Option<Bench>,
    #[command(flatten)]
    topology: topology::TopologyBench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// The whole topology: four processors and the sink under a synthetic year of many
    /// cooperatives; exactly-once on and off, 1/2/4 instances, 1×/2×/4× the data.
    Topology(topology::TopologyBench),
    /// devbroker's raw produce and consume rates.
    Broker(broker::BrokerBench),
    /// The stream runtime: pass-through and stateful processors, exactly-once on and off.
    Runtime(runtime::RuntimeBench),
    /// Redraw the chart of the recorded history (docs/bench-history.svg) from its file.
    Chart(history::ChartArgs),
    /// Store restore from a changelog of many updates, before and after the broker cleans it.
    Restore(restore::RestoreBench),
    /// The processors' state-store entries after each of several years of cooperatives.
    State(state::StateBench),
    /// The Postgres sink: rebuild N records from the topics into a fresh schema.
    Sink(sink::SinkBench),
    /// Appending to `event_log`: CPU per row as the log grows, a million rows at a time.
    Log(log::LogBench),
    /// The REST proxy: events/s and p50/p99 latency of single posts and 100-event batches.
    Proxy(proxy::ProxyBench),
    /// The outbox's relay: events/s relayed, and commit → visible p50/p99 at half that rate.
    Outbox(outbox::OutboxBench),
}

fn main() -> ExitCode {
    habitat_runtime::memory::configure();
    habitat_runtime::crypto::install_crypto_provider();
    let cli = Cli::parse();
    let outcome = match cli.part {
        None => topology::run(&cli.topology),
        Some(Bench::Topology(args)) => topology::run(&args),
        Some(Bench::Broker(args)) => broker::run(&args),
        Some(Bench::Runtime(args)) => runtime::run(&args),
        Some(Bench::Restore(args)) => restore::run(&args),
        Some(Bench::Chart(args)) => history::run_chart(&args),
        Some(Bench::Sink(args)) => sink::run(&args),
        Some(Bench::Log(args)) => log::run(&args),
        Some(Bench::State(args)) => state::run(&args),
        Some(Bench::Proxy(args)) => proxy::run(&args),
        Some(Bench::Outbox(args)) => outbox::run(&args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
