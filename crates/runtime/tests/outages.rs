//! A processor rides out its broker's outage: devbroker SIGKILLed under the running
//! counting example and restarted on its data directory and address after longer than
//! every client timeout. The processor is not restarted; it reports not ready while the
//! broker is away (and live throughout), and its outputs stay exactly once.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use devstack::{
    broker::Durable,
    process::{free_port, http_get},
};
use habitat_runtime::partition_for;
use rdkafka::{
    Message, Offset, TopicPartitionList,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer},
    producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer},
};
use test_support::{scratch_dir, unique, wait_for};

const PARTITIONS: i32 = 4;
const LONG: Duration = Duration::from_secs(180);
/// How long the broker stays away: longer than the runtime's 10 s calls to the broker.
const OUTAGE: Duration = Duration::from_secs(15);

/// A processor process, SIGKILLed when dropped.
struct Instance(Child);

impl Drop for Instance {
    fn drop(&mut self) {
        _ = self.0.kill();
        _ = self.0.wait();
    }
}

fn counter_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    profile.join("examples").join("counter")
}

fn produce(bootstrap: &str, topic: &str, range: std::ops::Range<usize>) {
    let producer: ThreadedProducer<DefaultProducerContext> =
        test_support::client_config_at(bootstrap)
            .set("enable.idempotence", "true")
            .create()
            .expect("producer");
    for i in range {
        let key = format!("t{}/item/{}", (i % 50) % 7, i % 50);
        let value = i.to_string();
        let mut record = BaseRecord::to(topic)
            .key(&key)
            .payload(&value)
            .partition(partition_for(&key, PARTITIONS));
        while let Err((_, back)) = producer.send(record) {
            record = back;
            producer.poll(Duration::from_millis(10));
        }
    }
    producer.flush(LONG).expect("delivered");
}

/// Ready as `/readyz` says (`None` when the metrics server does not answer).
fn ready(port: u16) -> Option<bool> {
    http_get(port, "/readyz").map(|body| body.starts_with("ready"))
}

#[test]
fn a_processor_rides_out_a_broker_outage_and_stays_exactly_once() {
    let dir = scratch_dir().join(unique("outage"));
    let broker_log = dir.with_extension("log");
    let first = Durable::start(SocketAddr::from(([127, 0, 0, 1], 0)), &dir, &broker_log)
        .expect("devbroker");
    let listen = first.addr();
    let bootstrap = listen.to_string();
    let name = unique("outage");
    let (input, output) = (format!("{name}.in"), format!("{name}.out"));
    let admin: AdminClient<DefaultClientContext> = test_support::client_config_at(&bootstrap)
        .create()
        .expect("admin");
    let created = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(admin.create_topics(
            &[&input, &output].map(|t| NewTopic::new(t, PARTITIONS, TopicReplication::Fixed(1))),
            &AdminOptions::new(),
        ))
        .expect("create topics");
    created.into_iter().for_each(|r| _ = r.expect("topic"));

    let config = scratch_dir().join(format!("{name}.yaml"));
    std::fs::write(
        &config,
        format!(
            "bootstrap_servers: \"{bootstrap}\"\ninputs: [\"{input}\"]\ncommit_interval_ms: 50\ntransaction_timeout_ms: 10000\nsession_timeout_ms: 6000\nkafka:\n  broker.address.family: v4\n"
        ),
    )
    .expect("config");
    let port = free_port().expect("port");
    let log = scratch_dir().join(format!("{name}.log"));
    let mut instance = Instance(
        Command::new(counter_binary())
            .env("COUNTER_NAME", &name)
            .env("COUNTER_OUTPUT", &output)
            .env("HABITAT_CONFIG", &config)
            .env("HABITAT_METRICS_LISTEN", format!("127.0.0.1:{port}"))
            .env("HABITAT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start the counter"),
    );

    let reader: BaseConsumer = test_support::client_config_at(&bootstrap)
        .set("group.id", unique("reader"))
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    // Assigned, not subscribed: a group member would re-read from the start when the
    // restarted broker forgets the group.
    let mut partitions = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        partitions
            .add_partition_offset(&output, partition, Offset::Beginning)
            .expect("partition");
    }
    reader.assign(&partitions).expect("assign");
    let mut outputs: Vec<String> = Vec::new();
    let mut read_until = |reader: &BaseConsumer, n: usize, what: &str| {
        wait_for(LONG, what, || {
            while let Some(Ok(message)) = reader.poll(Duration::from_millis(50)) {
                outputs.push(String::from_utf8_lossy(message.payload().unwrap_or_default()).into());
            }
            (outputs.len() >= n).then_some(())
        });
    };

    wait_for(LONG, "the processor ready", || ready(port)?.then_some(()));
    // Input keeps coming, before, during and after the outage (the producer rides it
    // out): the broker dies with a transaction of the processor open.
    let feeder = {
        let (bootstrap, input) = (bootstrap.clone(), input.clone());
        std::thread::spawn(move || {
            for chunk in 0..40 {
                produce(&bootstrap, &input, chunk * 50..(chunk + 1) * 50);
            }
        })
    };
    read_until(&reader, 300, "counting under way");
    first.kill();
    wait_for(LONG, "the processor to report not ready", || {
        (!ready(port)?).then_some(())
    });
    std::thread::sleep(OUTAGE);
    assert_eq!(
        instance.0.try_wait().expect("status"),
        None,
        "the processor exited during the outage:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let second = Durable::start(listen, &dir, &broker_log).expect("restart devbroker");
    feeder.join().expect("every record produced");
    read_until(&reader, 2_000, "every record counted");
    wait_for(LONG, "the processor ready again", || {
        ready(port)?.then_some(())
    });
    assert_eq!(
        instance.0.try_wait().expect("status"),
        None,
        "still running"
    );

    // Each key's outputs are 1..=n once each.
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for value in &outputs {
        let (key, count) = value.rsplit_once('=').expect("key=count");
        seen.entry(key.to_owned())
            .or_default()
            .push(count.parse().expect("count"));
    }
    assert_eq!(seen.len(), 50);
    for (key, mut counts) in seen {
        counts.sort_unstable();
        assert_eq!(counts, (1..=40).collect::<Vec<_>>(), "outputs of {key}");
    }
    drop(instance);
    second.kill();
    _ = std::fs::remove_dir_all(&dir);
}
