//! Runs the template processor: Avro through the registry in, its totals out as JSON;
//! configured by flags, a YAML file or `HABITAT_*` variables (see `habitat_runtime::config`)
//! and its own `HABITAT_TEMPLATE_QUIET_SECONDS`.

use std::{process::ExitCode, time::Duration};

use habitat_runtime::Json;
use template_processor::{MemberPeriodTotal, QUIET_VARIABLE, Template};

fn main() -> ExitCode {
    let mut template = Template::default();
    if let Ok(text) = std::env::var(QUIET_VARIABLE) {
        match text.parse::<u64>() {
            Ok(seconds) => template.quiet = Duration::from_secs(seconds),
            Err(error) => {
                eprintln!("error: {QUIET_VARIABLE}={text}: not a number of seconds ({error})");
                return ExitCode::from(2);
            }
        }
    }
    habitat_runtime::run_avro_to(template, Json::<MemberPeriodTotal>::default())
}
