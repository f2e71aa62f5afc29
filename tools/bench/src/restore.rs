//! `habitat bench restore`: how long a processor takes to restore a store from its
//! changelog, before and after the broker cleaned it.
//!
//! On an in-memory devbroker started for the run: the count-per-key benchmark processor
//! (exactly-once) works through `--updates` records over `--keys` keys, so its changelog
//! holds one record per update. It is stopped and started again (same group: nothing left
//! to process), and its restore time read from `habitat_store_restore_seconds`; then the
//! changelog is made to clean (AlterConfigs), awaited down to one record per key, and the
//! processor restarted again. A baseline restores a changelog written with one update per
//! key.

use std::{
    process::Child,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use clap::Args;
use rdkafka::{
    Offset, TopicPartitionList,
    admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier},
    client::DefaultClientContext,
    consumer::BaseConsumer,
    error::KafkaError,
    producer::{BaseProducer, BaseRecord, Producer},
};

use habitat::kafka::{config, ensure_topic, send};

use crate::{
    broker,
    runtime::{Mode, Reader, spawn},
};

#[derive(Clone, Debug, Args)]
pub struct RestoreBench {
    /// Keys of the store.
    #[arg(long, default_value_t = 10_000)]
    pub keys: usize,
    /// Updates written before the restores (spread evenly over the keys).
    #[arg(long, default_value_t = 1_000_000)]
    pub updates: usize,
    /// Partitions of the input topic and the changelog.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
}

pub fn run(args: &RestoreBench) -> Result<()> {
    let (bootstrap, _broker) = broker::bench_broker(None)?;
    let history = Changelog::written(&bootstrap, args, args.updates)?;
    let before = history.restore()?;
    let records_before = history.records()?;
    history.clean()?;
    let cleaning = Instant::now();
    let deadline = cleaning + Duration::from_secs(300);
    let mut records_after = history.records()?;
    while records_after > args.keys {
        if Instant::now() > deadline {
            bail!("the changelog still holds {records_after} records after 300 s");
        }
        std::thread::sleep(Duration::from_millis(500));
        records_after = history.records()?;
    }
    let cleaned_in = cleaning.elapsed();
    let after = history.restore()?;
    let baseline = Changelog::written(&bootstrap, args, args.keys)?;
    let base = baseline.restore()?;

    println!(
        "Store restore from its changelog ({} keys, {} partitions; count-per-key processor, exactly-once)",
        args.keys, args.partitions
    );
    println!("{}", broker::machine());
    println!("| changelog | records | restore s |");
    println!("|---|---:|---:|");
    println!(
        "| after {} updates, uncleaned | {records_before} | {:.2} |",
        args.updates, before
    );
    println!(
        "| the same, cleaned (in {:.1} s) | {records_after} | {:.2} |",
        cleaned_in.as_secs_f64(),
        after
    );
    println!(
        "| baseline: one update per key | {} | {:.2} |",
        baseline.records()?,
        base
    );
    println!(
        "cleaned / baseline: {:.2}×; uncleaned / cleaned: {:.1}×",
        after / base.max(1e-6),
        before / after.max(1e-6)
    );
    Ok(())
}

/// A benchmark processor's store, its input and changelog.
struct Changelog {
    bootstrap: String,
    input: String,
    output: String,
    topic: String,
    partitions: i32,
}

impl Changelog {
    /// A new processor that has worked through `updates` records over the keys.
    fn written(bootstrap: &str, args: &RestoreBench, updates: usize) -> Result<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let input = format!("restore-in-{}", &id[..12]);
        let output = format!("restore-out-{}", &id[..12]);
        ensure_topic(bootstrap, &input, args.partitions)?;
        ensure_topic(bootstrap, &output, args.partitions)?;
        let producer: BaseProducer = config(bootstrap)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "1000000")
            .create()?;
        for i in 0..updates {
            let key = format!("t{}/item/{}", i % 50, i % args.keys);
            send(
                &producer,
                BaseRecord::to(&input)
                    .key(key.as_str())
                    .payload(b"0".as_slice())
                    .partition(habitat_runtime::partition_for(&key, args.partitions)),
            )?;
        }
        producer.flush(Duration::from_secs(120))?;
        let changelog = Self {
            bootstrap: bootstrap.to_owned(),
            topic: format!("{input}-processor-counts-changelog"),
            input,
            output,
            partitions: args.partitions,
        };
        let mut outputs = Reader::new(bootstrap, &changelog.output, args.partitions)?;
        let (mut child, _) = changelog.start()?;
        let done = outputs.wait_for(updates, Duration::from_secs(600), &mut child);
        stop(child);
        done?;
        Ok(changelog)
    }

    /// Starts the processor; returns it with its metrics port.
    fn start(&self) -> Result<(Child, u16)> {
        let port = devstack::process::free_port()?;
        let child = spawn(
            &self.bootstrap,
            Mode::Count,
            &self.input,
            &self.output,
            true,
            port,
        )?;
        Ok((child, port))
    }

    /// Starts the processor again and returns how long its store took to restore.
    fn restore(&self) -> Result<f64> {
        let (mut child, port) = self.start()?;
        let deadline = Instant::now() + Duration::from_secs(600);
        let seconds = loop {
            if Instant::now() > deadline || child.try_wait()?.is_some() {
                stop(child);
                bail!("the processor did not restore its store");
            }
            let metrics = devstack::process::http_get(port, "/metrics").unwrap_or_default();
            let metric = |name: &str, labels: &[(&str, &str)]| {
                devstack::process::metric_value(&metrics, name, labels)
            };
            if metric("habitat_assigned_partitions", &[]) == Some(f64::from(self.partitions))
                && let Some(sum) =
                    metric("habitat_store_restore_seconds_sum", &[("store", "counts")])
            {
                break sum;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        stop(child);
        Ok(seconds)
    }

    /// Lets the broker clean the changelog at once.
    fn clean(&self) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> = config(&self.bootstrap).create()?;
        let alter = [
            ("segment.ms", "100"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("min.compaction.lag.ms", "0"),
        ]
        .into_iter()
        .fold(
            AlterConfig::new(ResourceSpecifier::Topic(&self.topic)),
            |alter, (name, value)| alter.set(name, value),
        );
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(admin.alter_configs(
                &[alter],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            ))?;
        Ok(())
    }

    /// Records on the changelog now, read to its end.
    fn records(&self) -> Result<usize> {
        let reader: BaseConsumer = config(&self.bootstrap)
            .set(
                "group.id",
                format!("restore-reader-{}", uuid::Uuid::new_v4().simple()),
            )
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "true")
            .create()?;
        let mut list = TopicPartitionList::new();
        for partition in 0..self.partitions {
            list.add_partition_offset(&self.topic, partition, Offset::Beginning)?;
        }
        habitat_runtime::kafka::assign_known(&reader, &list)?;
        let (mut records, mut ended) = (0, 0);
        let deadline = Instant::now() + Duration::from_secs(300);
        while ended < self.partitions {
            if Instant::now() > deadline {
                bail!("{} not read to its end in 300 s", self.topic);
            }
            match reader.poll(Duration::from_millis(100)) {
                Some(Ok(_)) => records += 1,
                Some(Err(KafkaError::PartitionEOF(_))) => ended += 1,
                Some(Err(error)) => return Err(error.into()),
                None => {}
            }
        }
        Ok(records)
    }
}

fn stop(mut child: Child) {
    devstack::process::terminate(
        i32::try_from(child.id()).unwrap_or_default(),
        Duration::from_secs(10),
    );
    _ = child.wait();
}
