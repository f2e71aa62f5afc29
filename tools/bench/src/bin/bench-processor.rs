//! `bench-processor`: one benchmark processor as a process (started by `habitat bench
//! runtime`).

use std::process::ExitCode;

use clap::Parser;
use habitat_bench::runtime::{Mode, serve_processor};

#[derive(Debug, Parser)]
#[command(name = "bench-processor", version)]
struct Args {
    #[arg(long)]
    bootstrap: String,
    #[arg(long, value_enum)]
    mode: Mode,
    #[arg(long)]
    input: String,
    #[arg(long)]
    output: String,
    #[arg(long, action = clap::ArgAction::Set)]
    exactly_once: bool,
}

fn main() -> ExitCode {
    habitat_runtime::memory::configure();
    let args = Args::parse();
    serve_processor(
        args.bootstrap,
        args.mode,
        args.input,
        args.output,
        args.exactly_once,
    )
}
