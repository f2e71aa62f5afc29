//! `outbox-relay`: publishes an outbox's committed rows to their context topics, exactly
//! once (see `outbox::relay`). Configured by flags or `HABITAT_*` variables.

use std::{
    net::SocketAddr,
    process::ExitCode,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use clap::Parser;
use habitat_runtime::config::RegistryAuth;
use outbox::relay::{RelayConfig, run};

/// Relays an outbox (installed with `habitat outbox install`) to Kafka.
#[derive(Parser, serde::Serialize)]
#[command(version)]
struct Args {
    /// A YAML file of settings (keys: the flags' names in snake case), under the
    /// `HABITAT_*` variables and the flags.
    #[arg(long, env = "HABITAT_CONFIG")]
    config: Option<std::path::PathBuf>,
    /// The producer's database holding the outbox.
    #[arg(long, env = "HABITAT_DATABASE_URL")]
    database_url: String,
    /// The outbox's schema.
    #[arg(long, env = "HABITAT_OUTBOX_SCHEMA", default_value = outbox::DEFAULT_SCHEMA)]
    schema: String,
    /// The relay's name: its transactional id, its position's key, its producer.
    #[arg(long, env = "HABITAT_OUTBOX_NAME", default_value = "outbox")]
    name: String,
    #[arg(
        long,
        env = "HABITAT_BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:19092"
    )]
    bootstrap_servers: String,
    #[arg(long, env = "HABITAT_SCHEMA_REGISTRY_URL")]
    schema_registry_url: String,
    /// `user:password` for a registry that asks for credentials.
    #[arg(long, env = "HABITAT_SCHEMA_REGISTRY_AUTH", hide_env_values = true)]
    schema_registry_auth: Option<RegistryAuth>,
    /// Rows per Kafka transaction, at most.
    #[arg(long, env = "HABITAT_OUTBOX_BATCH", default_value_t = 5000)]
    batch: i64,
    /// How often the outbox is read when no notification comes, in milliseconds.
    #[arg(long, env = "HABITAT_OUTBOX_POLL_MS", default_value_t = 500)]
    poll_ms: u64,
    #[arg(long, env = "HABITAT_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// How long the database may stay unreachable before the relay gives up and exits, in
    /// seconds (meanwhile it waits, not ready).
    #[arg(long, env = "HABITAT_GIVE_UP_SECONDS", default_value_t = habitat_runtime::retry::DEFAULT_GIVE_UP.as_secs())]
    give_up_seconds: u64,
    /// Print the configuration and the `HABITAT_*` variables read or ignored (as JSON), then
    /// exit.
    #[arg(long)]
    print_config: bool,
}

fn main() -> ExitCode {
    habitat_runtime::memory::configure();
    habitat_runtime::runner::init_tracing();
    habitat_runtime::crypto::install_crypto_provider();
    let (args, kafka) =
        match habitat_runtime::runner::start_flag_program::<Args>("outbox-relay", |args| {
            args.print_config
        }) {
            Ok(started) => started,
            Err(code) => return code,
        };
    let config = RelayConfig {
        database_url: args.database_url,
        schema: args.schema,
        name: args.name,
        bootstrap_servers: args.bootstrap_servers,
        schema_registry_url: args.schema_registry_url,
        schema_registry_auth: args.schema_registry_auth,
        kafka,
        batch: args.batch.max(1),
        poll: Duration::from_millis(args.poll_ms.max(1)),
        metrics_listen: args.metrics_listen,
        give_up: Duration::from_secs(args.give_up_seconds),
    };
    let shutdown = Arc::new(AtomicBool::new(false));
    {
        let shutdown = shutdown.clone();
        let signals = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a signal runtime");
            runtime.block_on(async {
                use tokio::signal::unix::{SignalKind, signal};
                if let (Ok(mut term), Ok(mut int)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                ) {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                    shutdown.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            });
        });
        drop(signals);
    }
    match run(&config, &shutdown) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
