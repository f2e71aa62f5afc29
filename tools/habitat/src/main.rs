//! `habitat`: the Habitat Streams command line.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use habitat::{
    StackArgs, chaos, demo, dlq, finance, keys, report, schemas, stack, supervise, topics, verify,
};
use habitat_runtime::config::RegistryAuth;

#[derive(Debug, Parser)]
#[command(
    name = "habitat",
    version,
    about = "Habitat Streams: patronage accounting on Kafka."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the local stack (Postgres, devbroker, schema registry, the four processors, the
    /// sink, the REST proxy); with --demo, also post a cooperative's year and print its reports.
    Up {
        #[command(flatten)]
        stack: StackArgs,
        /// Post the demo cooperative's year through the REST proxy once the stack is up.
        #[arg(long)]
        demo: bool,
    },
    /// Stop exactly what `habitat up` started in this state directory.
    Down {
        #[command(flatten)]
        stack: StackArgs,
        /// Also delete the state directory (all data).
        #[arg(long)]
        purge: bool,
    },
    /// Show what runs in this state directory and where.
    Status {
        #[command(flatten)]
        stack: StackArgs,
    },
    /// Write docs/event-catalog.md and the REST proxy's OpenAPI document from schemas/
    /// and topics.yaml.
    Catalog {
        /// Where to write the catalog.
        #[arg(long, default_value = contracts::catalog::PATH)]
        output: PathBuf,
        /// Where to write the OpenAPI document.
        #[arg(long, default_value = rest_proxy::openapi::generate::PATH)]
        openapi: PathBuf,
    },
    /// Topics of topics.yaml on a broker.
    #[command(subcommand)]
    Topics(Topics),
    /// The catalog's schemas on a schema registry.
    #[command(subcommand)]
    Schemas(Schemas),
    /// The partition of a tenant's records on each context topic: what a producer writing
    /// straight to Kafka must choose (murmur2 of the tenant id, as Kafka's default
    /// partitioner hashes a key), so that a tenant's records stay together.
    Partition {
        /// The tenant id.
        tenant: String,
        /// Only the partition among this many (no topics.yaml read).
        #[arg(long)]
        partitions: Option<i32>,
        /// A deployment's own topics.yaml (its partition counts); the release's when unset.
        #[arg(long, env = "HABITAT_TOPICS_FILE")]
        topics_file: Option<PathBuf>,
    },
    /// Export a finance report (CSV or JSON) from the sink's views.
    Report(report::ReportArgs),
    /// A topic's committed records as JSON, decoded through the registry; follows it unless
    /// --limit is given.
    Tail(habitat::tail::TailArgs),
    /// Check the live tables: a replay of the topics gives them (replay); the books' invariants hold (books).
    #[command(subcommand)]
    Verify(verify::Verify),
    /// Dead letters: list, show, re-drive, resolve.
    #[command(subcommand)]
    Dlq(dlq::Dlq),
    /// The REST proxy's API keys: create, list, revoke.
    #[command(subcommand)]
    Keys(keys::Keys),
    /// Who reads the books: finance roles bound to tenants.
    #[command(subcommand)]
    Finance(finance::Finance),
    /// The transactional outbox in a producer's database: install, status.
    #[command(subcommand)]
    Outbox(habitat::outbox::Outbox),
    /// Measure performance (run with optimised builds: `./habitat bench ...`); with no
    /// part named, the whole topology. Runs `habitat-bench`, built beside this program
    /// (`habitat bench --help` for its parts).
    #[command(disable_help_flag = true)]
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Post cooperatives' years through the REST proxy while killing the stack's programs
    /// at random (and Postgres by an immediate shutdown); then check that nothing was lost
    /// or written twice and print how long each program took to be ready again.
    Chaos(chaos::ChaosArgs),
    /// Keep one program running, starting it again when it dies (`habitat up` runs each
    /// program of the stack under one).
    #[command(hide = true)]
    Supervise(supervise::SuperviseArgs),
}

#[derive(Debug, Subcommand)]
enum Topics {
    /// Create missing topics, report configuration drift, alter it with --alter. Never
    /// deletes.
    Apply {
        /// Kafka bootstrap servers.
        #[arg(
            long,
            alias = "bootstrap",
            env = "HABITAT_BOOTSTRAP_SERVERS",
            default_value = "127.0.0.1:19092"
        )]
        bootstrap_servers: String,
        /// Environment of topics.yaml (replication settings).
        #[arg(long, env = "HABITAT_ENVIRONMENT", default_value = "dev")]
        environment: String,
        /// A deployment's own topics.yaml (its partitions, replication and settings); the
        /// release's when unset. Topics, records and keys must be the release's.
        #[arg(long, env = "HABITAT_TOPICS_FILE")]
        topics_file: Option<PathBuf>,
        /// A librdkafka setting, KEY=VALUE (repeat); `HABITAT_KAFKA_<NAME>` variables too.
        #[arg(long = "kafka", value_parser = habitat_runtime::runner::key_value)]
        kafka: Vec<(String, String)>,
        /// Report only.
        #[arg(long)]
        dry_run: bool,
        /// Alter configuration that drifted from topics.yaml.
        #[arg(long)]
        alter: bool,
    },
}

#[derive(Debug, Subcommand)]
enum Schemas {
    /// Register every schema of the catalog (BACKWARD_TRANSITIVE subjects).
    Register {
        /// Schema registry URL.
        #[arg(
            long,
            alias = "registry",
            env = "HABITAT_SCHEMA_REGISTRY_URL",
            default_value = "http://127.0.0.1:18081"
        )]
        schema_registry_url: String,
        /// The registry's HTTP Basic credentials, `user:password`.
        #[arg(long, env = "HABITAT_SCHEMA_REGISTRY_AUTH", hide_env_values = true)]
        schema_registry_auth: Option<RegistryAuth>,
    },
    /// Append the catalog's changed schemas to schemas/history.json (their release).
    Snapshot {
        /// The history file.
        #[arg(long, default_value = schemas::HISTORY_PATH)]
        history: PathBuf,
    },
    /// Test every schema against the registry without registering; fails on an
    /// incompatible change.
    Check {
        /// Schema registry URL.
        #[arg(
            long,
            alias = "registry",
            env = "HABITAT_SCHEMA_REGISTRY_URL",
            default_value = "http://127.0.0.1:18081"
        )]
        schema_registry_url: String,
        /// The registry's HTTP Basic credentials, `user:password`.
        #[arg(long, env = "HABITAT_SCHEMA_REGISTRY_AUTH", hide_env_values = true)]
        schema_registry_auth: Option<RegistryAuth>,
    },
}

fn main() -> ExitCode {
    habitat_runtime::memory::configure();
    habitat_runtime::crypto::install_crypto_provider();
    let cli = Cli::parse();
    if let Command::Bench { args } = &cli.command {
        return bench(args);
    }
    if let Command::Chaos(args) = &cli.command {
        return match chaos::run(args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::from(2)
            }
        };
    }
    if let Command::Verify(verify) = &cli.command {
        return match verify::run_verify(verify) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::from(2)
            }
        };
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn block_on<T>(future: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(future)
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Up { stack, demo } => {
            let running = stack::up(&stack)?;
            running.print();
            if demo {
                demo::run(&running)?;
            }
            Ok(())
        }
        Command::Down { stack, purge } => stack::down(&stack, purge),
        Command::Status { stack } => stack::status(&stack),
        Command::Bench { .. } | Command::Verify(_) | Command::Chaos(_) => {
            unreachable!("handled in main")
        }
        Command::Supervise(args) => supervise::run(&args),
        Command::Report(args) => report::run_report(&args),
        Command::Tail(args) => habitat::tail::run_tail(&args),
        Command::Dlq(command) => dlq::run_dlq(&command),
        Command::Keys(command) => keys::run_keys(&command),
        Command::Finance(command) => finance::run_finance(&command),
        Command::Outbox(command) => habitat::outbox::run_outbox(&command),
        Command::Partition {
            tenant,
            partitions,
            topics_file,
        } => {
            if !rest_proxy::validate::is_id(&tenant) {
                anyhow::bail!(
                    "{tenant:?} is not a tenant id: 1-64 characters of A-Z a-z 0-9 . _ : -"
                );
            }
            match partitions {
                Some(n) if n < 1 => anyhow::bail!("--partitions must be at least 1"),
                Some(n) => println!("{}", contracts::partition::tenant_partition(&tenant, n)),
                None => {
                    let topology = load_topology(topics_file.as_deref())?;
                    for topic in topology.context_topics("dev")? {
                        println!(
                            "{} partition {} of {}",
                            topic.name,
                            contracts::partition::tenant_partition(&tenant, topic.partitions),
                            topic.partitions
                        );
                    }
                }
            }
            Ok(())
        }
        Command::Topics(Topics::Apply {
            bootstrap_servers,
            environment,
            topics_file,
            kafka,
            dry_run,
            alter,
        }) => {
            let topology = load_topology(topics_file.as_deref())?;
            let settings = habitat::sources::kafka_settings(&kafka);
            let mut client = habitat::kafka::config(&bootstrap_servers);
            settings.apply(&mut client);
            let actions = topics::apply_with(
                &client,
                &topology,
                &environment,
                topics::Mode { dry_run, alter },
            )?;
            for action in actions {
                println!("{action}");
            }
            Ok(())
        }
        Command::Schemas(Schemas::Register {
            schema_registry_url: registry,
            schema_registry_auth: auth,
        }) => {
            for (subject, id) in block_on(schemas::register(
                &registry,
                auth.as_ref(),
                &schemas::catalog(),
            ))? {
                println!("registered {subject} (id {id})");
            }
            Ok(())
        }
        Command::Schemas(Schemas::Snapshot { history: path }) => {
            let mut history = schemas::load_history(&path)?;
            let changed = schemas::snapshot(&mut history, &schemas::catalog());
            std::fs::write(&path, serde_json::to_string_pretty(&history)? + "\n")?;
            println!(
                "{} subject(s) with a new version in {}.",
                changed.len(),
                path.display()
            );
            Ok(())
        }
        Command::Schemas(Schemas::Check {
            schema_registry_url: registry,
            schema_registry_auth: auth,
        }) => schemas::report(&block_on(schemas::check(
            &registry,
            auth.as_ref(),
            &schemas::catalog(),
        ))?),
        Command::Catalog { output, openapi } => {
            std::fs::write(
                &output,
                contracts::catalog::render(&contracts::topology::Topology::embedded()),
            )?;
            println!("Wrote {}.", output.display());
            std::fs::write(&openapi, rest_proxy::openapi::generate::render())?;
            println!("Wrote {}.", openapi.display());
            Ok(())
        }
    }
}

/// `habitat bench …`: the benchmarks' own program, with the same arguments and exit code.
fn bench(args: &[String]) -> ExitCode {
    let program = match devstack::process::sibling_binary("habitat-bench", "HABITAT_BENCH_BIN") {
        Ok(program) => program,
        Err(error) => {
            eprintln!("error: {error:#} (./habitat bench builds it)");
            return ExitCode::from(2);
        }
    };
    match std::process::Command::new(&program).args(args).status() {
        Ok(status) => status
            .code()
            .and_then(|code| u8::try_from(code).ok())
            .map_or(ExitCode::FAILURE, ExitCode::from),
        Err(error) => {
            eprintln!("error: cannot run {}: {error}", program.display());
            ExitCode::FAILURE
        }
    }
}

/// The release's topics.yaml, or a deployment's own at `path`.
fn load_topology(path: Option<&std::path::Path>) -> Result<contracts::topology::Topology> {
    let Some(path) = path else {
        return Ok(contracts::topology::Topology::embedded());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    contracts::topology::Topology::parse_deployed(&text).with_context(|| path.display().to_string())
}
