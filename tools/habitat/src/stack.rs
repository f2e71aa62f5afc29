//! The local stack: a Postgres cluster, a durable devbroker, the schema registry, the four
//! processors, the Postgres sink and the REST proxy, started as daemons in a state directory
//! and stopped from it. `up` is idempotent: what already runs is reused.

use std::{
    fs,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use contracts::topology::Topology;
use devstack::{
    broker,
    postgres::{Cluster, ClusterOptions, PgBin},
    process::{live_pid, sibling_binary, spawn_detached, terminate, wait_for_tcp},
};

use habitat_runtime::config::RegistryAuth;

use crate::{StackArgs, progress::Progress, schemas, supervise::State, topics};

const DATABASE: &str = "habitat";
/// The schema registry's own database in the local cluster.
const REGISTRY_DATABASE: &str = "habitat_registry";

/// How long `up` waits for each service to be ready before it says so and goes on.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// The file in the state directory holding the registry's credentials, `user:password`.
pub const REGISTRY_CREDENTIALS: &str = "registry-credentials";

/// The registry's credentials of this state directory: read, or made (a random password)
/// and kept readable by the owner only.
fn registry_credentials(root: &Path) -> Result<RegistryAuth> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let path = root.join(REGISTRY_CREDENTIALS);
    if let Ok(text) = fs::read_to_string(&path) {
        return text
            .parse()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()));
    }
    let password = uuid::Uuid::new_v4().simple().to_string();
    let auth: RegistryAuth = format!("habitat:{password}")
        .parse()
        .map_err(anyhow::Error::msg)?;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    writeln!(file, "{}", String::from(auth.clone()))?;
    eprintln!(
        "Registry credentials generated in {} (mode 600).",
        path.display()
    );
    Ok(auth)
}

/// The stream processors of SPEC §5, in the order they are started.
pub const PROCESSORS: [&str; 4] = [
    "patronage-aggregator",
    "allocation-calculator",
    "payment-schedule-creator",
    "distribution-recorder",
];

/// What `up` brought up, and where.
#[derive(Debug)]
pub struct Running {
    pub bootstrap: String,
    pub database_url: String,
    pub registry_url: String,
    /// The registry's credentials (kept in `<state-dir>/registry-credentials`).
    pub registry_auth: RegistryAuth,
    pub proxy_url: String,
    /// `(name, metrics URL)` of each processor and the sink.
    pub metrics: Vec<(String, String)>,
    pub state_dir: PathBuf,
}

impl Running {
    pub fn print(&self) {
        println!("Habitat stack is up.");
        println!("  Kafka API (devbroker): {}", self.bootstrap);
        println!("  Postgres:              {}", self.database_url);
        println!("  Schema registry:       {}", self.registry_url);
        println!(
            "  Registry credentials:  {} (user:password for writes; HABITAT_SCHEMA_REGISTRY_AUTH)",
            self.state_dir.join(REGISTRY_CREDENTIALS).display()
        );
        println!(
            "  REST proxy:            {}  (OpenAPI at /openapi.json)",
            self.proxy_url
        );
        for (name, url) in &self.metrics {
            println!("  Metrics {name:<24} {url}");
        }
        println!("  State and logs:        {}", self.state_dir.display());
        println!("  Stop it with:          habitat down");
    }
}

struct Paths {
    root: PathBuf,
}

impl Paths {
    fn new(args: &StackArgs) -> Result<Self> {
        fs::create_dir_all(&args.state_dir)
            .with_context(|| format!("cannot create {}", args.state_dir.display()))?;
        Ok(Self {
            root: fs::canonicalize(&args.state_dir)?,
        })
    }
    fn postgres(&self) -> PathBuf {
        self.root.join("postgres")
    }
    fn broker_data(&self) -> PathBuf {
        self.root.join("broker")
    }
    /// The local Postgres server, under a supervisor like the rest.
    fn postgres_server(&self) -> Daemon {
        Daemon {
            stop_signal: "INT",
            ..Daemon::new(&self.root, "postgres")
        }
    }
    fn broker(&self) -> Daemon {
        Daemon::new(&self.root, "devbroker")
    }
    fn registry(&self) -> Daemon {
        Daemon::new(&self.root, "schema-registry")
    }
    /// The processors, the sink, the outbox's relay and the proxy, in start order.
    fn services(&self) -> Vec<Daemon> {
        PROCESSORS
            .iter()
            .chain(&["postgres-sink", "outbox-relay", "rest-proxy"])
            .map(|name| Daemon::new(&self.root, name))
            .collect()
    }
}

/// A process of the stack started detached under a supervisor (`habitat supervise`, which
/// starts it again when it dies), known by the supervisor's pid file and state file in the
/// state directory.
struct Daemon {
    name: &'static str,
    pid_file: PathBuf,
    state_file: PathBuf,
    log: PathBuf,
    /// The signal that stops the program (`TERM`; `INT` for Postgres's fast shutdown).
    stop_signal: &'static str,
}

impl Daemon {
    fn new(root: &Path, name: &'static str) -> Self {
        Self {
            name,
            pid_file: root.join(format!("{name}.pid")),
            state_file: root.join(format!("{name}.state")),
            log: root.join(format!("{name}.log")),
            stop_signal: "TERM",
        }
    }

    fn pid(&self) -> Option<i32> {
        live_pid(&self.pid_file)
    }

    /// Starts `command` under a supervisor unless `reuse`, then waits until `addr` accepts
    /// connections.
    fn start(&self, reuse: bool, command: &mut Command, addr: SocketAddr) -> Result<()> {
        if !reuse {
            eprintln!("Starting {} on {addr}.", self.name);
            _ = fs::remove_file(&self.state_file);
            _ = spawn_detached(&mut self.supervised(command)?, &self.log, &self.pid_file)?;
        }
        wait_for_tcp(addr, Duration::from_secs(30))
            .with_context(|| format!("{} did not start; see {}", self.name, self.log.display()))
    }

    /// `command` run by `habitat supervise`, with its environment.
    fn supervised(&self, command: &Command) -> Result<Command> {
        let mut wrapper = Command::new(sibling_binary("habitat", "HABITAT_CLI_BIN")?);
        _ = wrapper
            .arg("supervise")
            .arg("--state")
            .arg(&self.state_file)
            .arg("--stop-signal")
            .arg(self.stop_signal)
            .arg("--")
            .arg(command.get_program())
            .args(command.get_args());
        for (name, value) in command.get_envs() {
            _ = match value {
                Some(value) => wrapper.env(name, value),
                None => wrapper.env_remove(name),
            };
        }
        if let Some(dir) = command.get_current_dir() {
            _ = wrapper.current_dir(dir);
        }
        Ok(wrapper)
    }

    /// What the supervisor last wrote.
    fn state(&self) -> Option<State> {
        State::read(&self.state_file)
    }

    fn stop(&self) {
        match self.pid() {
            Some(pid) => {
                // The supervisor stops its program (SIGTERM, its grace, SIGKILL), then itself.
                terminate(pid, Duration::from_secs(15));
                println!("Stopped {} (pid {pid}).", self.name);
            }
            None => println!("{} was not running.", self.name),
        }
        // A program left behind by a supervisor that was killed itself.
        if let Some(child) = self.state().and_then(|s| s.pid)
            && let Ok(child) = i32::try_from(child)
            && devstack::process::is_alive(child)
        {
            terminate(child, Duration::from_secs(10));
        }
        _ = fs::remove_file(&self.pid_file);
        _ = fs::remove_file(&self.state_file);
    }

    fn status(&self, label: &str, port: u16) {
        let running = self.pid().is_some();
        let state = self.state().unwrap_or_default();
        let restarts = match (&state.last_exit, state.last_exit_at) {
            (Some(exit), Some(at)) if state.restarts > 0 => format!(
                ", {} restart{}, last: {exit} at {}",
                state.restarts,
                if state.restarts == 1 { "" } else { "s" },
                at.format("%H:%M:%S")
            ),
            _ => String::new(),
        };
        // Between a death and its restart the supervisor runs without a program.
        let shown = if !running {
            "stopped"
        } else if state.pid.is_some() || !self.state_file.exists() {
            "running"
        } else {
            "restarting"
        };
        println!(
            "{label:<24} {shown:<10} 127.0.0.1:{port}{}{restarts}",
            state
                .pid
                .filter(|_| running)
                .map(|pid| format!(" (pid {pid})"))
                .unwrap_or_default()
        );
    }
}

fn cluster(paths: &Paths, args: &StackArgs) -> Result<Cluster> {
    Ok(Cluster::new(
        PgBin::ensure()?,
        &paths.postgres(),
        args.postgres_port,
        ClusterOptions {
            // The sink writes WAL in bulk (docs/operations.md); the default 1GB of
            // `max_wal_size` is kept, for a machine's disk.
            settings: vec!["wal_buffers=16MB".to_owned()],
            ..ClusterOptions::default()
        },
    ))
}

/// The port of each service: the proxy's listener, the others' metrics.
fn service_ports(args: &StackArgs, services: &[Daemon]) -> Vec<u16> {
    let mut next_metrics = args.metrics_port;
    services
        .iter()
        .map(|service| {
            if service.name == "rest-proxy" {
                args.proxy_port
            } else {
                next_metrics += 1;
                next_metrics - 1
            }
        })
        .collect()
}

fn port_in_use(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

fn ensure_free(port: u16, flag: &str, env: &str) -> Result<()> {
    if port_in_use(port) {
        bail!("port {port} is in use by another program; choose another with {flag} or {env}");
    }
    Ok(())
}

/// Starts what is not running yet and waits until each part accepts connections.
pub fn up(args: &StackArgs) -> Result<Running> {
    let paths = Paths::new(args)?;
    let cluster = match &args.database_url {
        Some(url) => Err(url.clone()),
        None => Ok(cluster(&paths, args)?),
    };
    let start_postgres = cluster.as_ref().is_ok_and(|c| !c.is_running());
    let (broker, registry) = (paths.broker(), paths.registry());
    let start_broker = broker.pid().is_none();
    let start_registry = registry.pid().is_none();
    let services = paths.services();
    let ports = service_ports(args, &services);
    for (service, port) in services.iter().zip(&ports) {
        if service.pid().is_none() {
            ensure_free(
                *port,
                if service.name == "rest-proxy" {
                    "--proxy-port"
                } else {
                    "--metrics-port"
                },
                if service.name == "rest-proxy" {
                    "HABITAT_PROXY_PORT"
                } else {
                    "HABITAT_METRICS_PORT"
                },
            )?;
        }
    }
    // Refuse before starting anything when a port belongs to another program.
    if start_postgres {
        ensure_free(
            args.postgres_port,
            "--postgres-port",
            "HABITAT_POSTGRES_PORT",
        )?;
    }
    if start_broker {
        ensure_free(args.broker_port, "--broker-port", "HABITAT_BROKER_PORT")?;
    }
    if start_registry {
        ensure_free(
            args.registry_port,
            "--registry-port",
            "HABITAT_REGISTRY_PORT",
        )?;
    }

    // A local cluster, or the URL of the Postgres given instead (which then also holds
    // the registry's tables).
    let (database_url, registry_database_url) = match cluster {
        Ok(cluster) => {
            if start_postgres {
                cluster.init()?;
                paths.postgres_server().start(
                    false,
                    &mut cluster.server_command(),
                    SocketAddr::from(([127, 0, 0, 1], args.postgres_port)),
                )?;
                cluster.wait_ready()?;
            }
            cluster.create_database(DATABASE)?;
            cluster.create_database(REGISTRY_DATABASE)?;
            (cluster.url(DATABASE), cluster.url(REGISTRY_DATABASE))
        }
        Err(external) => (external.clone(), external),
    };

    let broker_addr = SocketAddr::from(([127, 0, 0, 1], args.broker_port));
    broker.start(
        !start_broker,
        Command::new(broker::binary()?)
            .arg("--listen")
            .arg(broker_addr.to_string())
            .arg("--data-dir")
            .arg(paths.broker_data()),
        broker_addr,
    )?;
    let registry_auth = registry_credentials(&paths.root)?;
    let registry_addr = SocketAddr::from(([127, 0, 0, 1], args.registry_port));
    registry.start(
        !start_registry,
        Command::new(sibling_binary(
            "schema-registry",
            "HABITAT_SCHEMA_REGISTRY_BIN",
        )?)
        .arg("--listen")
        .arg(registry_addr.to_string())
        .env("DATABASE_URL", &registry_database_url)
        .env(
            "SCHEMA_REGISTRY_CREDENTIALS",
            String::from(registry_auth.clone()),
        ),
        registry_addr,
    )?;
    let registry_url = format!("http://{registry_addr}");

    let bootstrap = broker_addr.to_string();
    let actions = topics::apply(
        &bootstrap,
        &Topology::embedded(),
        "dev",
        topics::Mode::default(),
    )?;
    let created = actions
        .iter()
        .filter(|a| matches!(a, topics::Action::Created(_)))
        .count();
    eprintln!(
        "Topics: {created} created, {} present.",
        actions.len() - created
    );
    let registered = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(schemas::register(
            &registry_url,
            Some(&registry_auth),
            &schemas::catalog(),
        ))?;
    eprintln!("Schemas: {} subjects registered.", registered.len());

    // The stack's own database holds an outbox too, relayed like any producer's.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(outbox::install::install(
            &database_url,
            outbox::DEFAULT_SCHEMA,
        ))
        .context("installing the outbox")?;

    let mut metrics = Vec::new();
    for (service, port) in services.iter().zip(&ports) {
        let addr = SocketAddr::from(([127, 0, 0, 1], *port));
        let env_var = format!(
            "HABITAT_{}_BIN",
            service.name.to_uppercase().replace('-', "_")
        );
        let mut command = Command::new(sibling_binary(service.name, &env_var)?);
        // The stack's own variables (ports, state directory…) are not the service's; the
        // service gets its settings below, plus librdkafka, logging and memory settings.
        clear_habitat_env(&mut command, |name| {
            name.starts_with("HABITAT_KAFKA_")
                || habitat_runtime::config::process_variables().any(|v| v == name)
        });
        _ = command
            .env("HABITAT_BOOTSTRAP_SERVERS", &bootstrap)
            .env("HABITAT_SCHEMA_REGISTRY_URL", &registry_url)
            .env(
                "HABITAT_SCHEMA_REGISTRY_AUTH",
                String::from(registry_auth.clone()),
            )
            .env("HABITAT_LOG", "info");
        if service.name == "rest-proxy" {
            _ = command
                .env("HABITAT_LISTEN", addr.to_string())
                .env("HABITAT_DATABASE_URL", &database_url);
        } else {
            _ = command.env("HABITAT_METRICS_LISTEN", addr.to_string());
            metrics.push((service.name.to_owned(), format!("http://{addr}/metrics")));
        }
        if matches!(service.name, "postgres-sink" | "outbox-relay") {
            _ = command.env("HABITAT_DATABASE_URL", &database_url);
        }
        service.start(service.pid().is_some(), &mut command, addr)?;
    }
    // Each service to ready: partitions assigned, stores restored, dependencies answering.
    for (service, port) in services.iter().zip(&ports) {
        let progress = Progress::waiting(service.name);
        let deadline = Instant::now() + READY_WITHIN;
        let answer = loop {
            let answer = devstack::process::http_get(*port, "/readyz").unwrap_or_default();
            if answer.trim() == "ready" || Instant::now() >= deadline {
                break answer;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        if answer.trim() == "ready" {
            progress.finish("ready");
        } else {
            progress.finish("not ready yet");
            eprintln!(
                "  {} says: {}; its log: {}",
                service.name,
                answer.trim(),
                service.log.display()
            );
        }
    }

    Ok(Running {
        bootstrap,
        database_url,
        registry_url,
        registry_auth,
        proxy_url: format!("http://127.0.0.1:{}", args.proxy_port),
        metrics,
        state_dir: paths.root,
    })
}

/// Removes the `HABITAT_*` variables this process has from `command`'s environment, but
/// those `passed` keeps.
pub fn clear_habitat_env(command: &mut Command, passed: impl Fn(&str) -> bool) {
    for (name, _) in std::env::vars() {
        if name.starts_with("HABITAT_") && !passed(&name) {
            _ = command.env_remove(name);
        }
    }
}

/// Stops the services, the registry, devbroker and Postgres of this state directory
/// (nothing else).
pub fn down(args: &StackArgs, purge: bool) -> Result<()> {
    if !args.state_dir.exists() {
        println!(
            "Nothing to stop: {} does not exist.",
            args.state_dir.display()
        );
        return Ok(());
    }
    let paths = Paths::new(args)?;
    for service in paths.services().iter().rev() {
        service.stop();
    }
    paths.registry().stop();
    paths.broker().stop();
    if args.database_url.is_none() && paths.postgres().join("data").exists() {
        let server = paths.postgres_server();
        if server.pid().is_some() {
            server.stop();
            println!("Stopped Postgres.");
        }
        // A server started otherwise (by an older `habitat up`).
        let cluster = cluster(&paths, args)?;
        if cluster.is_running() {
            cluster.stop()?;
            println!("Stopped Postgres.");
        }
    }
    if purge {
        fs::remove_dir_all(&paths.root)
            .with_context(|| format!("cannot remove {}", paths.root.display()))?;
        println!("Removed {}.", paths.root.display());
    }
    Ok(())
}

/// Prints each part of the stack: running or not, and its address.
pub fn status(args: &StackArgs) -> Result<()> {
    if !args.state_dir.exists() {
        println!("No stack in {}.", args.state_dir.display());
        return Ok(());
    }
    let paths = Paths::new(args)?;
    paths.broker().status("devbroker", args.broker_port);
    paths.registry().status("registry", args.registry_port);
    let services = paths.services();
    for (service, port) in services.iter().zip(service_ports(args, &services)) {
        service.status(service.name, port);
    }
    if let Some(url) = &args.database_url {
        println!("{:<24} external {url}", "postgres");
    } else {
        let server = paths.postgres_server();
        if server.pid().is_some() {
            server.status("postgres", args.postgres_port);
        } else {
            let running = postgres_running(&paths.postgres());
            println!(
                "{:<24} {:<10} 127.0.0.1:{}",
                "postgres",
                if running { "running" } else { "stopped" },
                args.postgres_port
            );
        }
    }
    Ok(())
}

fn postgres_running(dir: &Path) -> bool {
    fs::read_to_string(dir.join("data").join("postmaster.pid"))
        .ok()
        .and_then(|pid| pid.lines().next()?.trim().parse::<i32>().ok())
        .is_some_and(devstack::process::is_alive)
}
