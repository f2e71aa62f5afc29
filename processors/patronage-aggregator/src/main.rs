//! Runs the patronage aggregator (Avro through the registry; see `habitat_runtime::config`).

fn main() -> std::process::ExitCode {
    habitat_runtime::run_avro(patronage_aggregator::PatronageAggregator)
}
