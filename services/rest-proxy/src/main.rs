//! `rest-proxy`: producers post domain events over HTTP.

use std::{net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

use clap::Parser;
use habitat_runtime::{avro::AvroCodec, config::RegistryAuth, runner::init_tracing};
use rdkafka::ClientConfig;
use rest_proxy::{
    AppState, HttpMetrics, Limits, Partitions, RateLimit,
    idempotency::Idempotency,
    keys::{self, Keys},
    registry::Schemas,
    router,
    writer::{Writer, WriterConfig},
};
use tracing::info;

#[derive(Parser, serde::Serialize)]
#[command(
    name = "rest-proxy",
    version,
    about = "Producers post Habitat Streams events over HTTP."
)]
struct Args {
    /// A YAML file of settings (keys: the flags' names in snake case), under the
    /// `HABITAT_*` variables and the flags.
    #[arg(long, env = "HABITAT_CONFIG")]
    config: Option<std::path::PathBuf>,
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
    /// The registry's HTTP Basic credentials, `user:password`.
    #[arg(long, env = "HABITAT_SCHEMA_REGISTRY_AUTH", hide_env_values = true)]
    schema_registry_auth: Option<RegistryAuth>,
    /// Postgres holding the API keys and idempotency records (schema `rest_proxy`).
    #[arg(long, env = "HABITAT_DATABASE_URL")]
    database_url: String,
    /// This instance's id; its transactional id is `rest-proxy-<id>`.
    #[arg(long, env = "HABITAT_INSTANCE_ID", default_value = "0")]
    instance_id: String,
    /// Kafka transactions in flight at once: each of these producers (transactional ids
    /// `rest-proxy-<id>`, `rest-proxy-<id>-1`, …) gathers the next requests while the others
    /// wait on the broker. Keep it the same across restarts of an instance, so each id's
    /// unfinished transaction is fenced at once.
    #[arg(long, env = "HABITAT_WRITER_PRODUCERS", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=16))]
    writer_producers: u16,
    /// How long, in microseconds, a producer taking requests waits for more to share its
    /// transaction after the first.
    #[arg(long, env = "HABITAT_WRITER_LINGER_MICROS", default_value_t = 500)]
    writer_linger_micros: u64,
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
    /// Failed authentications per client address per minute before it is answered 429
    /// without a key lookup until the minute is over; 0 for no limit.
    #[arg(long, env = "HABITAT_AUTH_FAILURES_PER_MINUTE", default_value_t = 30)]
    auth_failures_per_minute: u32,
    /// How long the answer to a request with an Idempotency-Key is kept, in hours.
    #[arg(long, env = "HABITAT_IDEMPOTENCY_KEEP_HOURS", default_value_t = 24)]
    idempotency_keep_hours: u64,
    /// Age in seconds after which an unanswered Idempotency-Key claim (its proxy died) is
    /// taken over; longer than any write takes (the writer gives up on a commit after 30 s).
    #[arg(
        long,
        env = "HABITAT_IDEMPOTENCY_TAKEOVER_SECONDS",
        default_value_t = 120
    )]
    idempotency_takeover_seconds: u64,
    /// How long Postgres may stay unreachable at start before the proxy gives up and exits
    /// (later outages are answered 503 with Retry-After, not waited for).
    #[arg(long, env = "HABITAT_GIVE_UP_SECONDS", default_value_t = habitat_runtime::retry::DEFAULT_GIVE_UP.as_secs())]
    give_up_seconds: u64,
    /// Print the configuration and the `HABITAT_*` variables read and ignored, then exit.
    #[arg(long)]
    print_config: bool,
}

impl Args {
    fn retry_policy(&self) -> habitat_runtime::retry::RetryPolicy {
        habitat_runtime::retry::RetryPolicy::giving_up_after(std::time::Duration::from_secs(
            self.give_up_seconds,
        ))
    }
}

fn main() -> ExitCode {
    habitat_runtime::memory::configure();
    habitat_runtime::crypto::install_crypto_provider();
    init_tracing();
    let (args, kafka) =
        match habitat_runtime::runner::start_flag_program::<Args>("rest-proxy", |args| {
            args.print_config
        }) {
            Ok(started) => started,
            Err(code) => return code,
        };
    let runtime = match habitat_runtime::runner::async_runtime(2) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    // Postgres not (yet) reachable, or still recovering, is waited for.
    let pool = match runtime.block_on(args.retry_policy().run(
        "preparing the key store",
        || keys::connect(&args.database_url),
        habitat_runtime::retry::is_transient_database,
    )) {
        Ok(pool) => pool,
        Err(error) => {
            eprintln!("error: cannot prepare the key store: {error}");
            return ExitCode::FAILURE;
        }
    };
    let codec = match AvroCodec::with_auth(
        &args.schema_registry_url,
        args.schema_registry_auth.as_ref(),
        runtime.handle().clone(),
    ) {
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
        producers: usize::from(args.writer_producers),
        linger: Duration::from_micros(args.writer_linger_micros),
        timeout: Duration::from_secs(10),
        kafka: kafka.0.clone().into_iter().collect(),
    });
    let mut idempotency = Idempotency::new(pool.clone());
    idempotency.keep = Duration::from_secs(args.idempotency_keep_hours * 3600);
    idempotency.takeover = Duration::from_secs(args.idempotency_takeover_seconds);
    let state = AppState {
        keys: Arc::new(
            Keys::new(pool, Duration::from_secs(args.key_cache_seconds))
                .with_failure_limit(args.auth_failures_per_minute),
        ),
        rate: Arc::new(RateLimit::per_second(args.rate_limit_per_second)),
        idempotency: idempotency.clone(),
        writer,
        codec: Arc::new(codec),
        partitions: Arc::new(Partitions::new(client)),
        schemas: Arc::new(
            Schemas::new(&args.schema_registry_url).with_auth(args.schema_registry_auth.clone()),
        ),
        limits: Limits {
            body_bytes: args.max_body_bytes,
            batch_events: args.max_batch_events,
        },
        metrics: HttpMetrics::default(),
    };
    let outcome = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        info!(addr = %listener.local_addr()?, "Serving the REST proxy.");
        let _purge = idempotency.purge_every(Duration::from_secs(600));
        axum::serve(
            listener,
            router(state).into_make_service_with_connect_info::<SocketAddr>(),
        )
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
