//! `habitat bench broker`: devbroker's raw produce and consume rates.
//!
//! Starts its own in-memory devbroker on a free port, produces N records of a fixed size
//! with an idempotent producer (acks=all), then consumes them all from the beginning.
//! Prints records/s and MB/s for both directions, with the machine it ran on.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use devstack::{
    broker,
    postgres::{Cluster, ClusterOptions, PgBin, shell_quote},
    process::{Guardian, free_port},
};

use habitat::kafka::{config, ensure_topic, ensure_topic_with, send};
use rdkafka::{
    ClientConfig, Offset, TopicPartitionList,
    consumer::BaseConsumer,
    producer::{BaseProducer, BaseRecord, Producer},
};

#[derive(Clone, Debug, Args)]
pub struct BrokerBench {
    /// Records to produce and consume.
    #[arg(long, default_value_t = 500_000)]
    pub records: usize,
    /// Value size of each record, in bytes.
    #[arg(long, default_value_t = 200)]
    pub size: usize,
    /// Partitions of the benchmark topic.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// Use this broker instead of starting an in-memory devbroker.
    #[arg(long)]
    pub bootstrap: Option<String>,
    /// A librdkafka setting for the benchmark's clients, KEY=VALUE (repeat): a cluster's
    /// `security.protocol`, `sasl.*`, `ssl.*`, or `compression.type`. `HABITAT_KAFKA_<NAME>`
    /// variables too; flags win.
    #[arg(long = "kafka", value_parser = habitat_runtime::runner::key_value)]
    pub kafka: Vec<(String, String)>,
}

impl BrokerBench {
    /// The benchmark's client settings for `bootstrap`.
    fn client(&self, bootstrap: &str) -> ClientConfig {
        let mut client = config(bootstrap);
        habitat::sources::kafka_settings(&self.kafka).apply(&mut client);
        client
    }
}

/// One measured direction.
pub struct Rate {
    pub records: usize,
    pub bytes: usize,
    pub elapsed: Duration,
}

impl Rate {
    pub fn per_second(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }
    pub fn megabytes_per_second(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64() / 1_000_000.0
    }
}

pub fn run(args: &BrokerBench) -> Result<()> {
    let (bootstrap, broker) = bench_broker(args.bootstrap.as_deref())?;
    let topic = format!("bench-{}", uuid::Uuid::new_v4().simple());
    ensure_topic_with(&args.client(&bootstrap), &topic, args.partitions)?;

    let produced = produce(&bootstrap, &topic, args)?;
    let consumed = consume(&bootstrap, &topic, args)?;

    println!(
        "devbroker raw rates ({} records of {} bytes, {} partitions)",
        args.records, args.size, args.partitions
    );
    println!("{}", machine());
    println!("| direction | records/s | MB/s | seconds |");
    println!("|---|---:|---:|---:|");
    for (name, rate) in [
        ("produce (idempotent, acks=all)", &produced),
        ("consume (read_committed)", &consumed),
    ] {
        println!(
            "| {name} | {:.0} | {:.1} | {:.2} |",
            rate.per_second(),
            rate.megabytes_per_second(),
            rate.elapsed.as_secs_f64()
        );
    }
    if let Some(broker) = &broker {
        println!(
            "devbroker peak resident memory: {:.0} MiB after {} records ({:.0} MB of values)",
            peak_memory_mib(broker.pid()),
            args.records,
            (args.records * args.size) as f64 / 1e6
        );
    }
    Ok(())
}

pub fn produce(bootstrap: &str, topic: &str, args: &BrokerBench) -> Result<Rate> {
    let producer: BaseProducer = args
        .client(bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let value = vec![b'x'; args.size];
    let started = Instant::now();
    for i in 0..args.records {
        let key = format!("key-{}", i % 1000);
        send(
            &producer,
            BaseRecord::to(topic)
                .key(key.as_str())
                .payload(value.as_slice()),
        )?;
    }
    producer.flush(Duration::from_secs(120))?;
    Ok(Rate {
        records: args.records,
        bytes: args.records * args.size,
        elapsed: started.elapsed(),
    })
}

pub fn consume(bootstrap: &str, topic: &str, args: &BrokerBench) -> Result<Rate> {
    let consumer: BaseConsumer = args
        .client(bootstrap)
        .set(
            "group.id",
            format!("bench-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "5242880")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..args.partitions {
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    habitat_runtime::kafka::assign_known(&consumer, &assignment)?;
    let started = Instant::now();
    let mut count = 0;
    let mut bytes = 0;
    while count < args.records {
        if started.elapsed() > Duration::from_secs(300) {
            bail!("consumed {count} of {} records in 300 s", args.records);
        }
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            bytes += message?.payload_len();
            count += 1;
        }
    }
    Ok(Rate {
        records: count,
        bytes,
        elapsed: started.elapsed(),
    })
}

/// A running in-memory devbroker, killed when dropped (or with the benchmark process).
pub struct BenchBroker {
    child: std::process::Child,
    /// Kills the broker should this process die first.
    _guardian: Guardian,
}

impl BenchBroker {
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap_or(0)
    }
}

impl Drop for BenchBroker {
    fn drop(&mut self) {
        _ = self.child.kill();
        _ = self.child.wait();
    }
}

/// What the service benchmarks run on: a runtime, an in-memory devbroker with the context
/// topics, a durable Postgres with a `registry` database and the schema registry on it.
pub struct BenchStack {
    pub runtime: tokio::runtime::Runtime,
    pub bootstrap: String,
    pub broker: Option<BenchBroker>,
    pub cluster: Cluster,
    pub registry: String,
    _postgres: Guardian,
}

impl BenchStack {
    /// Starts the stack; the context topics get `partitions` partitions each.
    pub fn start(name: &str, partitions: i32) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let (bootstrap, broker) = bench_broker(None)?;
        let (cluster, postgres) = bench_postgres(name)?;
        cluster.create_database("registry")?;
        let registry = runtime
            .block_on(schema_registry::spawn_local(&cluster.url("registry")))
            .context("schema registry")?;
        for topic in CONTEXT_TOPICS {
            ensure_topic(&bootstrap, topic, partitions)?;
        }
        Ok(Self {
            runtime,
            bootstrap,
            broker,
            cluster,
            registry,
            _postgres: postgres,
        })
    }

    /// The broker's process id (0 when measuring a broker given by address).
    pub fn broker_pid(&self) -> i32 {
        self.broker.as_ref().map_or(0, BenchBroker::pid)
    }

    /// A `proxy` database for the REST proxy's keys, with one key for every tenant and
    /// event type: (the database's URL, the key's token).
    pub fn proxy_key(&self) -> Result<(String, String)> {
        use rest_proxy::keys::{self, ANY};
        self.cluster.create_database("proxy")?;
        let database = self.cluster.url("proxy");
        let token = self.runtime.block_on(async {
            let pool = keys::connect(&database).await?;
            let (_, token) =
                keys::create(&pool, "bench", &[ANY.to_owned()], &[ANY.to_owned()]).await?;
            Ok::<_, anyhow::Error>(token)
        })?;
        Ok((database, token))
    }
}

/// The context topics.
pub const CONTEXT_TOPICS: [&str; 3] = ["habitat.people", "habitat.treasury", "habitat.agreements"];

/// A fresh durable Postgres cluster (fsync on, the commit time of every transaction kept)
/// in a temporary directory, stopped and removed when the guardian drops (or this process
/// dies).
pub fn bench_postgres(name: &str) -> Result<(Cluster, Guardian)> {
    let dir = std::env::temp_dir().join(format!(
        "habitat-bench-{name}-pg-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let cluster = Cluster::new(
        PgBin::ensure()?,
        &dir,
        free_port()?,
        ClusterOptions {
            ephemeral: false,
            // Latency is measured to the commit of a row's transaction.
            settings: vec!["track_commit_timestamp=on".to_owned()],
        },
    );
    cluster.init()?;
    cluster.start()?;
    let guardian = Guardian::new(&format!(
        "{}; rm -rf {}",
        cluster.stop_script(),
        shell_quote(dir.as_os_str())
    ))?;
    Ok((cluster, guardian))
}

/// The broker to measure on: `bootstrap` when given, else a fresh in-memory devbroker.
pub fn bench_broker(bootstrap: Option<&str>) -> Result<(String, Option<BenchBroker>)> {
    Ok(match bootstrap {
        Some(bootstrap) => (bootstrap.to_owned(), None),
        None => {
            let process = broker::start(&broker::binary()?, None, None)?;
            let guardian = Guardian::new(&format!("kill -9 {} 2>/dev/null", process.child.id()))?;
            let addr = process.addr.to_string();
            (
                addr,
                Some(BenchBroker {
                    child: process.child,
                    _guardian: guardian,
                }),
            )
        }
    })
}

/// User + system CPU time of a process so far.
pub fn cpu_time(pid: i32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    Ok(Stat::parse(&stat).own)
}

/// System (kernel) CPU time of a process so far: with [`cpu_time`], how much of its time
/// was spent in the kernel on its behalf (writes, page faults, reclaim).
pub fn system_time(pid: i32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    Ok(Stat::parse(&stat).system)
}

/// What a `/proc/<pid>/stat` line says of a process's CPU.
#[derive(Debug, PartialEq)]
struct Stat {
    parent: i32,
    /// User + system time of the process itself.
    own: Duration,
    /// Its system time alone.
    system: Duration,
    /// User + system time of its children that exited and were waited for.
    reaped: Duration,
}

impl Stat {
    fn parse(stat: &str) -> Self {
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        // After the command name: state is field 3, ppid 4, utime 14, stime 15, cutime 16
        // and cstime 17 (1-based), in clock ticks of USER_HZ, 100 on Linux.
        let ticks = |range: std::ops::Range<usize>| {
            let sum: u64 = fields
                .get(range)
                .unwrap_or_default()
                .iter()
                .filter_map(|f| f.parse::<u64>().ok())
                .sum();
            Duration::from_secs_f64(sum as f64 / 100.0)
        };
        Self {
            parent: fields.get(1).and_then(|f| f.parse().ok()).unwrap_or(0),
            own: ticks(11..13),
            system: ticks(12..13),
            reaped: ticks(13..15),
        }
    }
}

/// Peak resident memory (VmHWM) of a process so far, in MiB; 0 when it cannot be read.
pub fn peak_memory_mib(pid: i32) -> f64 {
    status_mib(pid, "VmHWM:")
}

/// Resident memory (VmRSS) of a process now, in MiB; 0 when it cannot be read.
pub fn resident_memory_mib(pid: i32) -> f64 {
    status_mib(pid, "VmRSS:")
}

/// A `kB` field of `/proc/<pid>/status`, in MiB.
fn status_mib(pid: i32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|l| {
                l.strip_prefix(field)?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU time of a process and all its children, live or exited (Postgres: the postmaster,
/// its backends, and the autovacuum workers that came and went).
pub fn tree_cpu_time(pid: i32) -> Duration {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|p| {
            let stat = Stat::parse(&std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?);
            if p == pid {
                // Children that exited were waited for by this one: their time is here.
                Some(stat.own + stat.reaped)
            } else {
                (stat.parent == pid).then_some(stat.own)
            }
        })
        .sum()
}

/// One line describing the machine: CPU model, cores, memory.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split(':').nth(1))
        .map_or("unknown CPU".to_owned(), |m| m.trim().to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or("unknown".to_owned(), |kb| {
            format!("{:.0} GiB", kb as f64 / 1_048_576.0)
        });
    format!("Machine: {model}, {cores} cores, {memory} memory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_the_parent_and_the_own_and_reaped_cpu() {
        // A command name with spaces and a parenthesis, as `/proc` prints it.
        let line = "4242 (postgres: a (b) c) S 17 4242 4242 0 -1 4194560 900 0 0 0 \
                    250 50 1200 300 20 0 1 0 100 1000 10 18446744073709551615";
        assert_eq!(
            Stat::parse(line),
            Stat {
                parent: 17,
                own: Duration::from_secs(3),
                system: Duration::from_millis(500),
                reaped: Duration::from_secs(15),
            }
        );
    }
}
