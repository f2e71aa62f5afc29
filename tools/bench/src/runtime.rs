//! `habitat bench runtime`: what the stream runtime costs on top of the broker.
//!
//! For a pass-through and a stateful count-per-key processor, with exactly-once on and off,
//! on an in-memory devbroker started for the run (or `--bootstrap`):
//!
//! - throughput: N records are loaded first, then the processor (a child process, so its
//!   CPU time is its own) works through them; records/s from its first to its last output
//!   seen by a `read_committed` consumer;
//! - CPU per record: the processor's user + system time over the run, divided by N;
//! - end-to-end latency: records produced at a steady rate, each carrying its send time;
//!   p50/p99 of the time until its output is read.
//!
//! devbroker's own produce/consume rates are measured on the same broker beside them.

use std::{
    process::{Child, Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::{Args, ValueEnum};
use habitat_runtime::{Context, ProcessError, Processor, Record, RuntimeConfig, Utf8};
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::BaseConsumer,
    producer::{BaseProducer, BaseRecord, Producer},
};

use habitat::kafka::{config, ensure_topic, send};

use crate::broker::{self, BrokerBench};

#[derive(Clone, Debug, Args)]
pub struct RuntimeBench {
    /// Records per throughput run.
    #[arg(long, default_value_t = 100_000)]
    pub records: usize,
    /// Partitions of the input and output topics.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// Records per second in the latency run.
    #[arg(long, default_value_t = 1_000)]
    pub rate: u32,
    /// Seconds of the latency run.
    #[arg(long, default_value_t = 5)]
    pub seconds: u32,
    /// Use this broker instead of starting an in-memory devbroker.
    #[arg(long)]
    pub bootstrap: Option<String>,
}

/// The benchmark processors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Emits every record unchanged.
    PassThrough,
    /// Counts records per key in a state store, emits `<value>|<count>`.
    Count,
}

/// The processor a benchmark child runs.
pub struct BenchProcessor {
    name: String,
    mode: Mode,
    output: String,
}

impl Processor for BenchProcessor {
    type In = String;
    type Out = String;

    fn name(&self) -> &str {
        &self.name
    }

    fn stores(&self) -> Vec<&'static str> {
        match self.mode {
            Mode::PassThrough => vec![],
            Mode::Count => vec!["counts"],
        }
    }

    fn process(
        &self,
        ctx: &mut Context<'_, String>,
        record: &Record<String>,
    ) -> Result<(), ProcessError> {
        let key = record.key.clone().unwrap_or_default();
        let value = record.value.clone().unwrap_or_default();
        let value = match self.mode {
            Mode::PassThrough => value,
            Mode::Count => {
                let count = ctx.get::<u64>("counts", &key)?.unwrap_or(0) + 1;
                ctx.put("counts", &key, &count)?;
                format!("{value}|{count}")
            }
        };
        ctx.send(&self.output, key, Some(value));
        Ok(())
    }
}

/// The hidden `bench-processor` command: one benchmark processor as a process.
pub fn serve_processor(
    bootstrap: String,
    mode: Mode,
    input: String,
    output: String,
    exactly_once: bool,
) -> ExitCode {
    habitat_runtime::runner::init_tracing();
    let name = format!("{input}-processor");
    let mut config = RuntimeConfig {
        bootstrap_servers: bootstrap,
        inputs: vec![input],
        exactly_once,
        ..RuntimeConfig::default()
    };
    if let Err(error) = config.apply_env(std::env::vars()) {
        eprintln!("error: {error}");
        return ExitCode::from(2);
    }
    let processor = BenchProcessor { name, mode, output };
    habitat_runtime::runner::run_config(processor, |_, _| Ok(Utf8), config)
}

struct Measured {
    label: String,
    records_per_second: f64,
    cpu_micros_per_record: f64,
    p50: Duration,
    p99: Duration,
}

pub fn run(args: &RuntimeBench) -> Result<()> {
    let (bootstrap, _broker) = broker::bench_broker(args.bootstrap.as_deref())?;
    let mut results = Vec::new();
    for mode in [Mode::PassThrough, Mode::Count] {
        for exactly_once in [true, false] {
            let measured = scenario(&bootstrap, args, mode, exactly_once)?;
            eprintln!(
                "{}: {:.0} records/s",
                measured.label, measured.records_per_second
            );
            results.push(measured);
        }
    }
    let ceiling = BrokerBench {
        records: args.records,
        size: 20,
        partitions: args.partitions,
        bootstrap: Some(bootstrap.clone()),
        kafka: Vec::new(),
    };
    let topic = format!("bench-ceiling-{}", uuid::Uuid::new_v4().simple());
    ensure_topic(&bootstrap, &topic, args.partitions)?;
    let produced = broker::produce(&bootstrap, &topic, &ceiling)?;
    let consumed = broker::consume(&bootstrap, &topic, &ceiling)?;

    println!(
        "Stream runtime on devbroker ({} records per throughput run, {} partitions; latency at {} records/s for {} s)",
        args.records, args.partitions, args.rate, args.seconds
    );
    println!("{}", broker::machine());
    println!("| processor | records/s | CPU µs/record | p50 latency ms | p99 latency ms |");
    println!("|---|---:|---:|---:|---:|");
    for m in &results {
        println!(
            "| {} | {:.0} | {:.1} | {:.1} | {:.1} |",
            m.label,
            m.records_per_second,
            m.cpu_micros_per_record,
            m.p50.as_secs_f64() * 1e3,
            m.p99.as_secs_f64() * 1e3
        );
    }
    println!(
        "| devbroker ceiling: produce (idempotent) / consume (read_committed) | {:.0} / {:.0} | | | |",
        produced.per_second(),
        consumed.per_second()
    );
    Ok(())
}

fn scenario(
    bootstrap: &str,
    args: &RuntimeBench,
    mode: Mode,
    exactly_once: bool,
) -> Result<Measured> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let input = format!("bench-in-{}", &id[..12]);
    let output = format!("bench-out-{}", &id[..12]);
    ensure_topic(bootstrap, &input, args.partitions)?;
    ensure_topic(bootstrap, &output, args.partitions)?;
    let label = format!(
        "{} ({})",
        match mode {
            Mode::PassThrough => "pass-through",
            Mode::Count => "count per key (state store)",
        },
        if exactly_once {
            "exactly-once"
        } else {
            "at-least-once"
        }
    );

    let producer: BaseProducer = config(bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    for i in 0..args.records {
        send_timed(&producer, &input, i, args.partitions)?;
    }
    producer.flush(Duration::from_secs(120))?;

    let mut outputs = Reader::new(bootstrap, &output, args.partitions)?;
    let port = devstack::process::free_port()?;
    let mut child = spawn(bootstrap, mode, &input, &output, exactly_once, port)?;
    let pid = i32::try_from(child.id()).unwrap_or_default();
    let result = (|| {
        // The clock starts when the processor owns every partition, stores restored.
        let deadline = Instant::now() + Duration::from_secs(120);
        let partitions = f64::from(args.partitions);
        while devstack::process::http_get(port, "/metrics")
            .and_then(|m| devstack::process::metric_value(&m, "habitat_assigned_partitions", &[]))
            != Some(partitions)
        {
            if Instant::now() > deadline || child.try_wait()?.is_some() {
                bail!("the benchmark processor did not take its partitions");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let first = Instant::now();
        let last = outputs.wait_for(args.records, Duration::from_secs(600), &mut child)?;
        let cpu = crate::broker::cpu_time(pid).context("read the processor's CPU time")?;
        let span = last
            .saturating_duration_since(first)
            .max(Duration::from_millis(1));
        // Latencies of the loaded backlog measure queueing, not the processor.
        outputs.latencies.clear();

        // Latency: a steady rate, each record carrying its send time.
        let total = (args.rate * args.seconds) as usize;
        let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
        let started = Instant::now();
        for n in 0..total {
            let due = started + interval * u32::try_from(n).unwrap_or(u32::MAX);
            while Instant::now() < due {
                outputs.poll_latencies(Duration::ZERO);
                std::thread::sleep(Duration::from_micros(200));
            }
            send_timed(&producer, &input, args.records + n, args.partitions)?;
            producer.poll(Duration::ZERO);
        }
        producer.flush(Duration::from_secs(30))?;
        outputs.wait_for(args.records + total, Duration::from_secs(120), &mut child)?;
        let mut latencies = std::mem::take(&mut outputs.latencies);
        latencies.sort_unstable();
        let pick = |q: f64| {
            latencies
                .get(((latencies.len() as f64) * q) as usize)
                .copied()
                .unwrap_or_default()
        };
        Ok(Measured {
            label: label.clone(),
            records_per_second: args.records as f64 / span.as_secs_f64(),
            cpu_micros_per_record: cpu.as_secs_f64() * 1e6 / args.records as f64,
            p50: pick(0.50),
            p99: pick(0.99),
        })
    })();
    devstack::process::terminate(pid, Duration::from_secs(10));
    _ = child.wait();
    result
}

fn send_timed(producer: &BaseProducer, topic: &str, i: usize, partitions: i32) -> Result<()> {
    let key = format!("t{}/item/{}", i % 50, i % 5_000);
    let value = now_micros().to_string();
    let record = BaseRecord::to(topic)
        .key(key.as_str())
        .payload(value.as_bytes())
        .partition(habitat_runtime::partition_for(&key, partitions));
    send(producer, record)
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

pub(crate) fn spawn(
    bootstrap: &str,
    mode: Mode,
    input: &str,
    output: &str,
    exactly_once: bool,
    metrics_port: u16,
) -> Result<Child> {
    let exe = devstack::process::sibling_binary("bench-processor", "HABITAT_BENCH_PROCESSOR_BIN")?;
    let mode = mode
        .to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default();
    Command::new(exe)
        .args([
            "--bootstrap",
            bootstrap,
            "--mode",
            &mode,
            "--input",
            input,
            "--output",
            output,
        ])
        .arg(if exactly_once {
            "--exactly-once=true"
        } else {
            "--exactly-once=false"
        })
        .env("HABITAT_LOG", "warn")
        .env(
            "HABITAT_METRICS_LISTEN",
            format!("127.0.0.1:{metrics_port}"),
        )
        .stdout(Stdio::null())
        .spawn()
        .context("start the benchmark processor")
}

/// User + system CPU time of a process, from /proc.
/// Reads the output topic under read_committed, noting arrival times and latencies.
pub(crate) struct Reader {
    consumer: BaseConsumer,
    count: usize,
    latencies: Vec<Duration>,
}

impl Reader {
    pub(crate) fn new(bootstrap: &str, topic: &str, partitions: i32) -> Result<Self> {
        let consumer: BaseConsumer = config(bootstrap)
            .set(
                "group.id",
                format!("bench-reader-{}", uuid::Uuid::new_v4().simple()),
            )
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "10")
            .create()?;
        let mut list = TopicPartitionList::new();
        for p in 0..partitions {
            list.add_partition_offset(topic, p, Offset::Beginning)?;
        }
        habitat_runtime::kafka::assign_known(&consumer, &list)?;
        Ok(Self {
            consumer,
            count: 0,
            latencies: Vec::new(),
        })
    }

    fn poll_latencies(&mut self, wait: Duration) -> Option<Instant> {
        let mut last = None;
        let mut wait = wait;
        while let Some(message) = self.consumer.poll(wait) {
            let Ok(message) = message else { continue };
            let now = now_micros();
            let sent: Option<i64> = message
                .payload()
                .and_then(|p| std::str::from_utf8(p).ok())
                .and_then(|v| v.split('|').next())
                .and_then(|v| v.parse().ok());
            if let Some(sent) = sent {
                self.latencies.push(Duration::from_micros(
                    u64::try_from(now - sent).unwrap_or(0),
                ));
            }
            self.count += 1;
            last = Some(Instant::now());
            wait = Duration::ZERO;
        }
        last
    }

    /// Polls until `n` outputs have arrived; returns when the n-th did.
    pub(crate) fn wait_for(
        &mut self,
        n: usize,
        timeout: Duration,
        child: &mut Child,
    ) -> Result<Instant> {
        let deadline = Instant::now() + timeout;
        let mut arrived = Instant::now();
        while self.count < n {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "the benchmark processor exited ({status}) after {} outputs",
                    self.count
                );
            }
            if Instant::now() > deadline {
                bail!("{} of {n} outputs after {timeout:?}", self.count);
            }
            if let Some(at) = self.poll_latencies(Duration::from_millis(20)) {
                arrived = at;
            }
        }
        Ok(arrived)
    }
}
