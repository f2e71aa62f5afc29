//! Runs the template processor: Avro through the registry, configured by flags, a YAML
//! file or `HABITAT_*` variables (see `habitat_runtime::config`).

fn main() -> std::process::ExitCode {
    habitat_runtime::run_avro(template_processor::Template)
}
