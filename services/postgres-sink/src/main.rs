//! `postgres-sink`: writes the topics into Postgres exactly once.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use habitat_runtime::{
    avro::AvroCodec,
    config::{ConfigError, EnvUse},
    metrics::Metrics,
    runner::{Loaded, init_tracing, read_config, stop_on_signal},
};
use postgres_sink::{
    SINK,
    config::{SinkConfig, redact_url},
    sink::Sink,
    store::{Store, migrate},
};
use tracing::info;

#[derive(Debug, Parser)]
#[command(
    name = "postgres-sink",
    version,
    about = "Writes the Habitat Streams topics into Postgres exactly once."
)]
struct Args {
    /// YAML configuration file (then HABITAT_* variables, then these flags).
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    bootstrap_servers: Option<String>,
    #[arg(long)]
    database_url: Option<String>,
    /// Postgres schema of the tables.
    #[arg(long)]
    schema: Option<String>,
    #[arg(long)]
    schema_registry_url: Option<String>,
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Print the configuration and the `HABITAT_*` variables read and ignored, then exit.
    #[arg(long)]
    print_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the schema and apply the migrations, then exit.
    Migrate,
}

fn load(args: &Args) -> Result<Loaded<SinkConfig>, ConfigError> {
    let mut config: SinkConfig = read_config(args.config.as_deref())?;
    let read = config.apply_env(std::env::vars())?;
    if let Some(v) = &args.bootstrap_servers {
        config.bootstrap_servers.clone_from(v);
    }
    if let Some(v) = &args.database_url {
        config.database_url = Some(v.clone());
    }
    if let Some(v) = &args.schema {
        config.schema.clone_from(v);
    }
    if let Some(v) = &args.schema_registry_url {
        config.schema_registry_url = Some(v.clone());
    }
    if let Some(v) = args.metrics_listen {
        config.metrics_listen = Some(v);
    }
    Ok(Loaded {
        config,
        env: EnvUse::of(std::env::vars(), read),
        print_only: args.print_config,
    })
}

fn main() -> ExitCode {
    habitat_runtime::memory::configure();
    habitat_runtime::crypto::install_crypto_provider();
    init_tracing();
    let args = Args::parse();
    let config = match load(&args) {
        Ok(loaded) => {
            if let Some(code) = loaded.print_or_warn(SINK) {
                return code;
            }
            loaded.config
        }
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let Some(database_url) = config.database_url.clone() else {
        eprintln!("error: database_url is not set (HABITAT_DATABASE_URL or --database-url)");
        return ExitCode::from(2);
    };
    let runtime = match habitat_runtime::runner::async_runtime(2) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    if let Some(Command::Migrate) = args.command {
        return match runtime.block_on(migrate(&database_url, &config.schema)) {
            Ok(()) => {
                println!(
                    "Schema {} of {} is migrated.",
                    config.schema,
                    redact_url(&database_url)
                );
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    let Some(registry) = config.schema_registry_url.clone() else {
        eprintln!(
            "error: schema_registry_url is not set (HABITAT_SCHEMA_REGISTRY_URL or --schema-registry-url)"
        );
        return ExitCode::from(2);
    };
    info!(?config, "Starting.");
    // Postgres not (yet) reachable, or still recovering, is waited for.
    let store = match runtime.block_on(config.retry_policy().run(
        "preparing Postgres",
        || {
            Store::connect_for(
                &database_url,
                &config.schema,
                &config.group_id,
                config.writers(),
            )
        },
        habitat_runtime::retry::has_transient_database_cause,
    )) {
        Ok(store) => store,
        Err(error) => {
            eprintln!("error: cannot prepare Postgres: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    let codec = match AvroCodec::with_auth(
        &registry,
        config.schema_registry_auth.as_ref(),
        runtime.handle().clone(),
    ) {
        Ok(codec) => codec,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let metrics = Metrics::new(SINK);
    if let Err(code) =
        habitat_runtime::runner::serve_metrics(&runtime, &metrics, config.metrics_listen)
    {
        return code;
    }
    postgres_sink::books::watch(
        runtime.handle(),
        store.pool().clone(),
        &config.schema,
        &metrics,
        Duration::from_secs(config.books_check_seconds),
    );
    let sink = Sink::new(config, store, codec, metrics, runtime.handle().clone());
    let flag = sink.shutdown_flag();
    stop_on_signal(runtime.handle(), flag);
    match sink.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
