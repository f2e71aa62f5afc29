//! Runs the allocation calculator (Avro through the registry; see `habitat_runtime::config`).

fn main() -> std::process::ExitCode {
    habitat_runtime::run_avro(allocation_calculator::AllocationCalculator)
}
