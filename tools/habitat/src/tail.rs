//! `habitat tail TOPIC`: a topic's committed records as JSON, decoded through the registry
//! into the REST proxy's shape (`event_type`, `tenant_id`, `meta`, `payload`) with their
//! topic, partition, offset and key. Follows the topic unless `--limit` is given.

use std::{io::Write as _, time::Duration};

use anyhow::{Context as _, Result};
use clap::{Args, ValueEnum};
use contracts::records::Event;
use habitat_runtime::{Codec, avro::AvroCodec};
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
};
use serde_json::{Value, json};

use crate::sources::{Topics, runtime};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    /// One JSON object per line.
    Json,
    /// Indented JSON, a blank line between records.
    Pretty,
}

/// `habitat tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// The topic (a context topic: habitat.people, habitat.treasury, habitat.agreements).
    pub topic: String,
    /// Start at the beginning of every partition (default: only what comes from now).
    #[arg(long)]
    pub from_beginning: bool,
    /// Only this tenant's records.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only records of this event type (`people.MemberRegistered`).
    #[arg(long = "type")]
    pub event_type: Option<String>,
    /// Only records with this key.
    #[arg(long)]
    pub key: Option<String>,
    /// Stop after this many records (or at the end the topic had when the command started);
    /// without it, follow the topic.
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, value_enum, default_value = "json")]
    pub format: Format,
    #[command(flatten)]
    pub topics: Topics,
}

/// A record as `tail` prints it.
pub fn shape(
    topic: &str,
    partition: i32,
    offset: i64,
    key: Option<&str>,
    event: Option<&Event>,
) -> Value {
    let mut out = json!({"topic": topic, "partition": partition, "offset": offset, "key": key});
    match event {
        Some(event) => {
            let mut payload = serde_json::to_value(event).unwrap_or(Value::Null);
            let meta = payload
                .as_object_mut()
                .and_then(|fields| fields.remove("meta"))
                .unwrap_or(Value::Null);
            out["event_type"] = json!(event.event_type());
            out["tenant_id"] = json!(event.meta().tenant_id);
            out["meta"] = meta;
            out["payload"] = payload;
        }
        None => out["tombstone"] = json!(true),
    }
    out
}

pub fn run_tail(args: &TailArgs) -> Result<()> {
    let runtime = runtime()?;
    let codec = AvroCodec::with_auth(
        &args.topics.registry,
        args.topics.registry_auth.as_ref(),
        runtime.handle().clone(),
    )?;
    let mut client = crate::kafka::config(&args.topics.bootstrap);
    args.topics.settings().apply(&mut client);
    let consumer: BaseConsumer = client
        .set("group.id", format!("habitat-tail-{}", uuid::Uuid::new_v4()))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .context("a consumer")?;
    let metadata = consumer
        .fetch_metadata(Some(&args.topic), Duration::from_secs(10))
        .with_context(|| format!("metadata of {}", args.topic))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .find(|t| t.name() == args.topic && t.error().is_none())
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .filter(|p: &Vec<i32>| !p.is_empty())
        .with_context(|| format!("topic {} does not exist", args.topic))?;
    // Where each partition ends now: with --limit, the tail stops there at the latest.
    let mut ends = Vec::new();
    let mut list = TopicPartitionList::new();
    for partition in &partitions {
        let (_, high) =
            consumer.fetch_watermarks(&args.topic, *partition, Duration::from_secs(10))?;
        ends.push((*partition, high));
        let start = if args.from_beginning {
            Offset::Beginning
        } else {
            Offset::End
        };
        list.add_partition_offset(&args.topic, *partition, start)?;
    }
    consumer.assign(&list)?;
    let mut printed = 0;
    let stdout = std::io::stdout();
    let done = |consumer: &BaseConsumer| -> Result<bool> {
        let position = consumer.position()?;
        Ok(ends.iter().all(|(partition, end)| {
            *end == 0
                || position
                    .find_partition(&args.topic, *partition)
                    .and_then(|p| p.offset().to_raw())
                    .is_some_and(|o| o >= *end)
        }))
    };
    loop {
        if args.limit.is_some_and(|limit| printed >= limit) {
            return Ok(());
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            if args.limit.is_some() && (!args.from_beginning || done(&consumer)?) {
                return Ok(());
            }
            continue;
        };
        let message = message?;
        let key = message
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned());
        let event = match message.payload() {
            Some(bytes) => match codec.decode(&args.topic, bytes) {
                Ok(event) => Some(event),
                Err(error) => {
                    let line = json!({"topic": args.topic, "partition": message.partition(),
                                      "offset": message.offset(), "key": key,
                                      "error": error.to_string()});
                    writeln!(stdout.lock(), "{line}")?;
                    continue;
                }
            },
            None => None,
        };
        if !args.matches(key.as_deref(), event.as_ref()) {
            continue;
        }
        let value = shape(
            &args.topic,
            message.partition(),
            message.offset(),
            key.as_deref(),
            event.as_ref(),
        );
        let mut out = stdout.lock();
        match args.format {
            Format::Json => writeln!(out, "{value}")?,
            Format::Pretty => writeln!(out, "{}\n", serde_json::to_string_pretty(&value)?)?,
        }
        out.flush()?;
        printed += 1;
    }
}

impl TailArgs {
    fn matches(&self, key: Option<&str>, event: Option<&Event>) -> bool {
        if self
            .key
            .as_deref()
            .is_some_and(|wanted| key != Some(wanted))
        {
            return false;
        }
        match event {
            Some(event) => {
                self.tenant
                    .as_deref()
                    .is_none_or(|tenant| event.meta().tenant_id == tenant)
                    && self
                        .event_type
                        .as_deref()
                        .is_none_or(|t| event.event_type() == t || event.full_name() == t)
            }
            // A tombstone: its key says the tenant (`<tenant>/…`).
            None => {
                self.event_type.is_none()
                    && self
                        .tenant
                        .as_deref()
                        .is_none_or(|tenant| key.and_then(|k| k.split('/').next()) == Some(tenant))
            }
        }
    }
}
