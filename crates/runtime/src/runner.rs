//! Turns a processor and its codec into a process: configuration, logs, metrics server,
//! signals, exit code. A processor's `main` is one call:
//!
//! ```no_run
//! # struct MyProcessor;
//! # impl habitat_runtime::Processor for MyProcessor {
//! #     type In = String; type Out = String;
//! #     fn name(&self) -> &str { "my-processor" }
//! #     fn process(&self, _: &mut habitat_runtime::Context<'_, String>, _: &habitat_runtime::Record<String>)
//! #         -> Result<(), habitat_runtime::ProcessError> { Ok(()) }
//! # }
//! fn main() -> std::process::ExitCode {
//!     habitat_runtime::run(MyProcessor, habitat_runtime::Utf8)
//! }
//! ```
//!
//! Exit codes: 0 after SIGTERM/SIGINT (the open batch committed, the group left), 1 on a
//! fatal error (fenced included), 2 on a configuration error.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::atomic::Ordering};

use clap::Parser;
use contracts::records::Event;
use tokio::runtime::Handle;
use tracing::info;

use crate::{
    Codec, Paired, Processor, RuntimeConfig,
    avro::AvroCodec,
    config::{ConfigError, EnvUse, KafkaSettings},
    engine::{Engine, EngineError},
    metrics::Metrics,
};

/// Flags every processor binary takes; each also reads `HABITAT_*` variables.
#[derive(Debug, Parser)]
#[command(about = "A Habitat Streams processor.")]
struct Args {
    /// YAML configuration file (see RuntimeConfig).
    #[arg(long, env = "HABITAT_CONFIG")]
    config: Option<PathBuf>,
    /// Kafka bootstrap servers.
    #[arg(long)]
    bootstrap_servers: Option<String>,
    /// Stable id of this instance (transactional id suffix).
    #[arg(long)]
    instance_id: Option<String>,
    /// Serve /metrics, /healthz and /readyz here.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Schema registry URL.
    #[arg(long)]
    schema_registry_url: Option<String>,
    /// An input topic (repeat for several).
    #[arg(long = "input")]
    inputs: Vec<String>,
    /// A librdkafka setting for every client, KEY=VALUE (repeat for several).
    #[arg(long = "kafka", value_parser = key_value)]
    kafka: Vec<(String, String)>,
    /// Commit offsets after the outputs instead of in transactions (benchmarks only).
    #[arg(long)]
    at_least_once: bool,
    /// Print the configuration and the `HABITAT_*` variables read and ignored, then exit.
    #[arg(long)]
    print_config: bool,
}

/// The librdkafka settings of the `HABITAT_KAFKA_*` variables, and which `HABITAT_*`
/// variables a clap program reads (its arguments' and those) or ignores.
pub fn clap_kafka_env(command: &clap::Command) -> (KafkaSettings, EnvUse) {
    let mut kafka = KafkaSettings::default();
    let mut read = clap_env_names(command);
    for (name, value) in std::env::vars() {
        if let Some(field) = name.strip_prefix("HABITAT_")
            && kafka.apply_env(field, value)
        {
            read.push(name);
        }
    }
    (kafka, EnvUse::of(std::env::vars(), read))
}

/// Parses a flag-configured program's arguments (`args`, the program's name first) with the
/// settings of a YAML file — `--config FILE` or `HABITAT_CONFIG` — as defaults under the
/// `HABITAT_*` variables and the flags: file → environment → flags, as processors and the
/// sink read theirs. The file's keys are the flags' names in snake case
/// (`max_body_bytes: 2097152`); one the program has no flag for is refused, naming it.
pub fn parse_layered<A: clap::Parser>(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Result<A, ConfigError> {
    let args: Vec<std::ffi::OsString> = args.into_iter().collect();
    let mut command = A::command();
    let from_flag = args
        .windows(2)
        .find_map(|pair| (pair[0] == "--config").then(|| PathBuf::from(&pair[1])));
    let from_flag = from_flag.or_else(|| {
        args.iter()
            .find_map(|arg| arg.to_str()?.strip_prefix("--config=").map(PathBuf::from))
    });
    let path = from_flag.or_else(|| std::env::var_os("HABITAT_CONFIG").map(PathBuf::from));
    if let Some(path) = path {
        let settings: std::collections::BTreeMap<String, serde_norway::Value> =
            read_config(Some(&path))?;
        for (key, value) in settings {
            let text = match value {
                serde_norway::Value::String(text) => text,
                serde_norway::Value::Number(n) => n.to_string(),
                serde_norway::Value::Bool(b) => b.to_string(),
                _ => {
                    return Err(ConfigError::FileSetting {
                        path,
                        key,
                        why: "a setting is a single value".to_owned(),
                    });
                }
            };
            let known = command
                .get_arguments()
                .any(|arg| arg.get_id() == key.as_str() && arg.get_long().is_some());
            if !known || key == "config" || key == "print_config" {
                return Err(ConfigError::FileSetting {
                    path,
                    key,
                    why: "this program has no such setting".to_owned(),
                });
            }
            // Read once, at start: the defaults live as long as the process.
            let text: &'static str = Box::leak(text.into_boxed_str());
            command = command.mut_arg(key, |arg| arg.default_value(text).required(false));
        }
    }
    // Bad flags end the process as clap does (usage on stderr, exit code 2).
    let matches = match command.try_get_matches_from(args) {
        Ok(matches) => matches,
        Err(error) => error.exit(),
    };
    match A::from_arg_matches(&matches) {
        Ok(parsed) => Ok(parsed),
        Err(error) => error.exit(),
    }
}

/// Starts a flag-configured program (the proxy, the relay): its arguments read as
/// [`parse_layered`] reads them, and the librdkafka settings of its `HABITAT_KAFKA_*`
/// variables; with `--print-config` (`print_config` of the arguments) the report is printed,
/// otherwise ignored variables are warned about. `Err` is the exit code when the program
/// stops here: 0 after the report, 2 on a bad configuration file.
pub fn start_flag_program<A>(
    program: &str,
    print_config: impl Fn(&A) -> bool,
) -> Result<(A, KafkaSettings), ExitCode>
where
    A: clap::Parser + serde::Serialize,
{
    let args: A = parse_layered(std::env::args_os()).map_err(|error| {
        eprintln!("error: {error}");
        ExitCode::from(2)
    })?;
    let (kafka, env) = clap_kafka_env(&A::command());
    let loaded = Loaded {
        env,
        config: Flags {
            args: &args,
            kafka: &kafka,
        },
        print_only: print_config(&args),
    };
    if let Some(code) = loaded.print_or_warn(program) {
        return Err(code);
    }
    Ok((args, kafka))
}

/// The `env` names of `command`'s arguments (the variables clap reads).
pub fn clap_env_names(command: &clap::Command) -> Vec<String> {
    command
        .get_arguments()
        .filter_map(|arg| arg.get_env())
        .map(|name| name.to_string_lossy().into_owned())
        .collect()
}

/// The configuration of a program configured by flags (and their variables): the flags
/// and the librdkafka settings, as one JSON object for `--print-config`.
#[derive(serde::Serialize)]
pub struct Flags<'a, A: serde::Serialize> {
    #[serde(flatten)]
    pub args: &'a A,
    pub kafka: &'a KafkaSettings,
}

/// A program's configuration as loaded at start.
pub struct Loaded<T> {
    pub config: T,
    pub env: EnvUse,
    /// `--print-config` was given: print and exit instead of running.
    pub print_only: bool,
}

impl<T: serde::Serialize> Loaded<T> {
    /// Prints the `--print-config` report and returns `Some(0)` when asked to, else warns
    /// about ignored variables and returns `None` (run).
    pub fn print_or_warn(&self, program: &str) -> Option<ExitCode> {
        if self.print_only {
            println!("{}", self.env.config_report(program, &self.config));
            return Some(ExitCode::SUCCESS);
        }
        self.env.warn_ignored();
        None
    }
}

/// Parses a `KEY=VALUE` flag.
pub fn key_value(text: &str) -> Result<(String, String), ConfigError> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| ConfigError::NotKeyValue(text.to_owned()))
}

/// The defaults, or the YAML file at `path` over them.
pub fn read_config<T>(path: Option<&std::path::Path>) -> Result<T, ConfigError>
where
    T: Default + serde::de::DeserializeOwned,
{
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_norway::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads the configuration: defaults, the YAML file, `HABITAT_*` variables, flags;
/// `variables` are the program's own (read elsewhere).
pub fn load_config(variables: &[&str]) -> Result<Loaded<RuntimeConfig>, ConfigError> {
    use clap::CommandFactory as _;
    let args = Args::parse();
    let mut config: RuntimeConfig = read_config(args.config.as_deref())?;
    let mut read = config.apply_env(std::env::vars())?;
    read.extend(clap_env_names(&Args::command()));
    read.extend(variables.iter().map(|v| (*v).to_owned()));
    let env = EnvUse::of(std::env::vars(), read);
    if let Some(v) = args.bootstrap_servers {
        config.bootstrap_servers = v;
    }
    if let Some(v) = args.instance_id {
        config.instance_id = v;
    }
    if let Some(v) = args.metrics_listen {
        config.metrics_listen = Some(v);
    }
    if let Some(v) = args.schema_registry_url {
        config.schema_registry_url = Some(v);
    }
    if !args.inputs.is_empty() {
        config.inputs = args.inputs;
    }
    config.kafka.0.extend(args.kafka);
    if args.at_least_once {
        config.exactly_once = false;
    }
    Ok(Loaded {
        config,
        env,
        print_only: args.print_config,
    })
}

/// Starts `tracing`: `HABITAT_LOG` (or `RUST_LOG`) filters, `HABITAT_LOG_FORMAT=json`
/// writes JSON lines.
pub fn init_tracing() {
    let filter = std::env::var("HABITAT_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_owned());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if std::env::var("HABITAT_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Runs `processor` with a ready codec.
pub fn run<P, C>(processor: P, codec: C) -> ExitCode
where
    P: Processor,
    C: Codec<In = P::In, Out = P::Out>,
{
    run_with(processor, |_, _| Ok(codec))
}

/// Runs a processor of [`Event`]s with Avro through the configured registry.
pub fn run_avro<P>(processor: P) -> ExitCode
where
    P: Processor<In = Event, Out = Event>,
{
    run_with(processor, avro_codec)
}

/// Runs a processor that reads [`Event`]s (Avro through the configured registry) and
/// writes values of its own with `output` (a derived view: [`Json`](crate::Json)).
pub fn run_avro_to<P, O>(processor: P, output: O) -> ExitCode
where
    P: Processor<In = Event, Out = O::Out>,
    O: Codec,
{
    run_with(processor, |config, handle| {
        Ok(Paired {
            input: avro_codec(config, handle)?,
            output,
        })
    })
}

/// The Avro codec of the configured registry.
fn avro_codec(config: &RuntimeConfig, handle: &Handle) -> Result<AvroCodec, ConfigError> {
    let url = config
        .schema_registry_url
        .as_deref()
        .ok_or(ConfigError::Missing(
            "schema_registry_url (HABITAT_SCHEMA_REGISTRY_URL)",
        ))?;
    Ok(AvroCodec::with_auth(
        url,
        config.schema_registry_auth.as_ref(),
        handle.clone(),
    )?)
}

/// Runs `processor` with the codec `make` builds from the configuration.
pub fn run_with<P, C, F>(processor: P, make: F) -> ExitCode
where
    P: Processor,
    C: Codec<In = P::In, Out = P::Out>,
    F: FnOnce(&RuntimeConfig, &Handle) -> Result<C, ConfigError>,
{
    crate::memory::configure();
    init_tracing();
    match load_config(&processor.variables()) {
        Ok(loaded) => match loaded.print_or_warn(processor.name()) {
            Some(code) => code,
            None => run_config(processor, make, loaded.config),
        },
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listen` when given; exit code 2 when the
/// address cannot be had.
pub fn serve_metrics(
    runtime: &tokio::runtime::Runtime,
    metrics: &Metrics,
    listen: Option<SocketAddr>,
) -> Result<(), ExitCode> {
    let Some(listen) = listen else {
        return Ok(());
    };
    match runtime.block_on(metrics.clone().serve(listen)) {
        Ok(addr) => {
            info!(%addr, "Serving /metrics, /healthz and /readyz.");
            Ok(())
        }
        Err(error) => {
            eprintln!("error: cannot serve metrics on {listen}: {error}");
            Err(ExitCode::from(2))
        }
    }
}

/// Runs `processor` with a configuration built by the caller (no flags are read; logging
/// is the caller's to set up).
pub fn run_config<P, C, F>(processor: P, make: F, config: RuntimeConfig) -> ExitCode
where
    P: Processor,
    C: Codec<In = P::In, Out = P::Out>,
    F: FnOnce(&RuntimeConfig, &Handle) -> Result<C, ConfigError>,
{
    let runtime = match async_runtime(1) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let codec = match make(&config, runtime.handle()) {
        Ok(codec) => codec,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let metrics = Metrics::new(processor.name());
    if let Err(code) = serve_metrics(&runtime, &metrics, config.metrics_listen) {
        return code;
    }
    let offset = chrono::TimeDelta::seconds(config.clock_offset_seconds);
    let listening = config.metrics_listen.is_some();
    let engine = Engine::new(processor, codec, config, runtime.handle().clone())
        .with_metrics(metrics.clone())
        .with_clock(std::sync::Arc::new(crate::clock::OffsetClock(offset)));
    let flag = engine.shutdown_flag();
    stop_on_signal(runtime.handle(), flag);
    let outcome = engine.run();
    crate::engine::report(&outcome);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error @ EngineError::Broken { .. }) if listening => {
            // Restarting would break it again: stay up, not ready, with the count on
            // /metrics for the alert, until an operator stops the process.
            eprintln!("error: {error}");
            metrics.halt(error.to_string());
            tracing::error!("Halted: nothing more is processed until the process is stopped.");
            runtime.block_on(signalled());
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Sets `flag` on SIGTERM or SIGINT, so that the loop watching it finishes its open batch
/// and returns.
pub fn stop_on_signal(handle: &Handle, flag: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    _ = handle.spawn(async move {
        signalled().await;
        info!("Signal received: finishing the open batch.");
        flag.store(true, Ordering::SeqCst);
    });
}

/// Returns on SIGTERM or SIGINT (at once when they cannot be watched).
async fn signalled() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// A multi-threaded async runtime with `workers` worker threads; the exit code to return
/// (after saying why) when it cannot start.
pub fn async_runtime(workers: usize) -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .map_err(|error| {
            eprintln!("error: cannot start the async runtime: {error}");
            ExitCode::FAILURE
        })
}
