//! Runs the distribution recorder (Avro through the registry; see `habitat_runtime::config`).
//! `HABITAT_CHART` may name a YAML file of account codes (see `habitat_domain::ledger::Chart`).

use std::process::ExitCode;

use habitat_domain::ledger::Chart;

fn main() -> ExitCode {
    let chart = match std::env::var(distribution_recorder::CHART_VARIABLE) {
        Err(_) => Chart::default(),
        Ok(path) => match std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_norway::from_str(&t).map_err(|e| e.to_string()))
        {
            Ok(chart) => chart,
            Err(error) => {
                eprintln!("error: chart of accounts {path}: {error}");
                return ExitCode::from(2);
            }
        },
    };
    habitat_runtime::run_avro(distribution_recorder::DistributionRecorder { chart })
}
