//! The counting example as a process: `COUNTER_NAME` (default `counter`) names it,
//! `COUNTER_OUTPUT` is its output topic; everything else is the runtime's configuration.

mod processor;

use std::process::ExitCode;

fn main() -> ExitCode {
    let name = std::env::var("COUNTER_NAME").unwrap_or_else(|_| "counter".to_owned());
    let Ok(output) = std::env::var("COUNTER_OUTPUT") else {
        eprintln!("error: set COUNTER_OUTPUT to the output topic");
        return ExitCode::from(2);
    };
    habitat_runtime::run(processor::Counter { name, output }, habitat_runtime::Utf8)
}
