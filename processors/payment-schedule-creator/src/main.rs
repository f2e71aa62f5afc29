//! Runs the payment-schedule creator (Avro through the registry; see `habitat_runtime::config`).

fn main() -> std::process::ExitCode {
    habitat_runtime::run_avro(payment_schedule_creator::PaymentScheduleCreator)
}
