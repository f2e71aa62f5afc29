//! `rest-proxy`: producers post domain events over HTTP.

use std::{net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

use clap::{CommandFactory as _, Parser};
use habitat_runtime::{
    avro::AvroCodec,
    config::{EnvUse, KafkaSettings, redact_url},
    runner::{Loaded, clap_env_names, init_tracing},
};
use rdkafka::ClientConfig;
use rest_proxy::{
    app::{AppState, HttpMetrics, Limits, Partitions, RateLimit, router},
    idempotency::Idempotency,
    keys::{self, Keys},
    registry::Schemas,
    writer::{Writer, WriterConfig},
};
use tracing::info;

#[derive(Parser)]
#[command(
    name = "rest-proxy",
    version,
    about = "Producers post Habitat Streams events over HTTP."
)]
struct Args {
    /// Address to serve on.
    #[arg(long, env = "HABITAT_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[arg(
        long,
        env = "HABITAT_BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:19092"
    )]
    bootstrap_servers: String,
    #[arg(
        long,
        env = "HABITAT_SCHEMA_REGISTRY_URL",
        default_value = "http://127.0.0.1:18081"
    )]
    schema_registry_url: String,
    /// Postgres holding the API keys and idempotency records (schema `rest_proxy`).
    #[arg(long, env = "HABITAT_DATABASE_URL")]
    database_url: String,
    /// This instance's id; its transactional id is `rest-proxy-<id>`.
    #[arg(long, env = "HABITAT_INSTANCE_ID", default_value = "0")]
    instance_id: String,
    /// Largest request body, in bytes (413 above).
    #[arg(long, env = "HABITAT_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    max_body_bytes: usize,
    /// Most events in one batch (422 above).
    #[arg(long, env = "HABITAT_MAX_BATCH_EVENTS", default_value_t = 500)]
    max_batch_events: usize,
    /// Requests per second per API key (429 above); 0 for no limit.
    #[arg(long, env = "HABITAT_RATE_LIMIT_PER_SECOND", default_value_t = 0)]
    rate_limit_per_second: u32,
    /// How long a key read from Postgres is trusted (a revocation takes this long).
    #[arg(long, env = "HABITAT_KEY_CACHE_SECONDS", default_value_t = 5)]
    key_cache_seconds: u64,
    /// Print the configuration and the `HABITAT_*` variables read and ignored, then exit.
    #[arg(long)]
    print_config: bool,
}

impl std::fmt::Debug for Args {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Args")
            .field("listen", &self.listen)
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("schema_registry_url", &self.schema_registry_url)
            .field("database_url", &redact_url(&self.database_url))
            .field("instance_id", &self.instance_id)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_batch_events", &self.max_batch_events)
            .field("rate_limit_per_second", &self.rate_limit_per_second)
            .field("key_cache_seconds", &self.key_cache_seconds)
            .finish()
    }
}

fn main() -> ExitCode {
    habitat_runtime::memory::retain_freed_memory();
    init_tracing();
    let args = Args::parse();
    let mut kafka = KafkaSettings::default();
    let mut read = clap_env_names(&Args::command());
    for (name, value) in std::env::vars() {
        if let Some(field) = name.strip_prefix("HABITAT_")
            && kafka.apply_env(field, value)
        {
            read.push(name);
        }
    }
    let loaded = Loaded {
        env: EnvUse::of(std::env::vars(), read),
        config: (&args, &kafka),
        print_only: args.print_config,
    };
    if let Some(code) = loaded.print_or_warn("rest-proxy") {
        return code;
    }
    let runtime = match habitat_runtime::runner::async_runtime(2) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let pool = match runtime.block_on(keys::connect(&args.database_url)) {
        Ok(pool) => pool,
        Err(error) => {
            eprintln!("error: cannot prepare the key store: {error}");
            return ExitCode::FAILURE;
        }
    };
    let codec = match AvroCodec::new(&args.schema_registry_url, runtime.handle().clone()) {
        Ok(codec) => codec,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let mut client = ClientConfig::new();
    _ = client.set("bootstrap.servers", &args.bootstrap_servers);
    kafka.apply(&mut client);
    let writer = Writer::start(WriterConfig {
        bootstrap_servers: args.bootstrap_servers.clone(),
        transactional_id: format!("rest-proxy-{}", args.instance_id),
        linger: Duration::from_millis(2),
        timeout: Duration::from_secs(10),
        kafka: kafka.0.clone().into_iter().collect(),
    });
    let state = AppState {
        keys: Arc::new(Keys::new(
            pool.clone(),
            Duration::from_secs(args.key_cache_seconds),
        )),
        rate: Arc::new(RateLimit::per_second(args.rate_limit_per_second)),
        idempotency: Idempotency::new(pool),
        writer,
        codec: Arc::new(codec),
        partitions: Arc::new(Partitions::new(client)),
        schemas: Arc::new(Schemas::new(&args.schema_registry_url)),
        limits: Limits {
            body_bytes: args.max_body_bytes,
            batch_events: args.max_batch_events,
        },
        metrics: HttpMetrics::default(),
    };
    let outcome = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        info!(addr = %listener.local_addr()?, "Serving the REST proxy.");
        axum::serve(listener, router(state))
            .with_graceful_shutdown(async {
                use tokio::signal::unix::{SignalKind, signal};
                if let (Ok(mut term), Ok(mut int)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                ) {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                info!("Signal received: finishing the requests in flight.");
            })
            .await
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
