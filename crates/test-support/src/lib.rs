//! Fixtures every integration test uses.
//!
//! - [`kafka()`]: a Kafka-API broker for the whole test binary — `$HABITAT_TEST_BROKERS`
//!   when set (Redpanda, Kafka), else a devbroker started on a free port.
//! - [`postgres()`]: a Postgres cluster for the whole test binary, on a free port, from the
//!   machine's binaries; [`database()`] gives each test a fresh database.
//! - [`unique()`]: names no other test uses (topics, groups, transactional ids).
//! - [`eventually()`]: await a condition with a timeout instead of sleeping.
//!
//! Processes started here are stopped, and their directories removed, when the test
//! binary exits, even on a panic or a kill.

pub mod compaction;

use std::{
    future::Future,
    path::PathBuf,
    sync::OnceLock,
    time::{Duration, Instant},
};

use devstack::{
    broker,
    postgres::{Cluster, ClusterOptions, PgBin},
    process::{Guardian, free_port},
};
use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
};

/// Environment variable: a bootstrap address of an external broker to test against.
pub const BROKERS_ENV: &str = "HABITAT_TEST_BROKERS";

/// The broker the tests of this binary share.
#[derive(Debug)]
pub struct Kafka {
    pub bootstrap: String,
    /// The devbroker child, when this binary started one.
    pub pid: Option<u32>,
    _guardian: Option<Guardian>,
}

/// The shared broker, started on first use.
pub fn kafka() -> &'static Kafka {
    static KAFKA: OnceLock<Kafka> = OnceLock::new();
    KAFKA.get_or_init(|| {
        if let Ok(bootstrap) = std::env::var(BROKERS_ENV) {
            return Kafka {
                bootstrap,
                pid: None,
                _guardian: None,
            };
        }
        start_devbroker().expect("start devbroker for the tests")
    })
}

fn start_devbroker() -> anyhow::Result<Kafka> {
    let bin = broker::binary()?;
    let log = scratch_dir().join(format!("devbroker-{}.log", std::process::id()));
    let process = broker::start(&bin, None, Some(&log))?;
    let pid = process.child.id();
    let guardian = Guardian::new(&format!("kill -9 {pid} 2>/dev/null"))?;
    // The child handle is dropped without waiting: the guardian owns its end.
    std::mem::forget(process.child);
    Ok(Kafka {
        bootstrap: process.addr.to_string(),
        pid: Some(pid),
        _guardian: Some(guardian),
    })
}

/// A directory for this test run's files (under the target directory when known).
pub fn scratch_dir() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join("habitat-tests");
    std::fs::create_dir_all(&dir).expect("create the scratch directory");
    dir
}

/// The Postgres cluster the tests of this binary share.
#[derive(Debug)]
pub struct Postgres {
    pub cluster: Cluster,
    _guardian: Guardian,
}

/// The shared Postgres cluster, created and started on first use.
pub fn postgres() -> &'static Postgres {
    static POSTGRES: OnceLock<Postgres> = OnceLock::new();
    POSTGRES.get_or_init(|| start_postgres().expect("start Postgres for the tests"))
}

fn start_postgres() -> anyhow::Result<Postgres> {
    let bin = PgBin::ensure()?;
    let dir = std::env::temp_dir().join(format!("habitat-pg-{}", unique("")));
    let cluster = Cluster::new(
        bin,
        &dir,
        free_port()?,
        ClusterOptions {
            ephemeral: true,
            ..ClusterOptions::default()
        },
    );
    cluster.init()?;
    cluster.start()?;
    let guardian = Guardian::new(&format!(
        "{}; rm -rf {}",
        cluster.stop_script(),
        devstack::postgres::shell_quote(dir.as_os_str())
    ))?;
    Ok(Postgres {
        cluster,
        _guardian: guardian,
    })
}

/// A fresh, empty database for one test; returns its URL.
pub fn database() -> String {
    let cluster = &postgres().cluster;
    let name = unique("test").replace('-', "_");
    cluster
        .create_database(&name)
        .expect("create a test database");
    cluster.url(&name)
}

/// A name no other test uses: `<prefix>-<random>`.
pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    if prefix.is_empty() {
        id[..12].to_owned()
    } else {
        format!("{prefix}-{}", &id[..12])
    }
}

/// Client settings every test client starts from.
pub fn client_config() -> ClientConfig {
    client_config_at(&kafka().bootstrap)
}

/// A client of the broker at `bootstrap` (over IPv4, as every test client).
pub fn client_config_at(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    _ = config
        .set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4");
    config
}

/// Creates a topic with `partitions` partitions (another test of the binary may have).
pub async fn create_topic(name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = client_config().create().expect("admin client");
    let results = admin
        .create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create topics");
    for result in results {
        match result {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => panic!("create topic {topic}: {code}"),
        }
    }
}

/// Awaits `check` until it returns `Some`, polling every few milliseconds; panics with
/// `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Blocking form of [`eventually`] for tests that drive synchronous clients.
pub fn wait_for<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Creates a topic from a synchronous test.
pub fn create_topic_blocking(name: &str, partitions: i32) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(create_topic(name, partitions));
}

/// Deletes a topic from a synchronous test.
pub fn delete_topic_blocking(name: &str) {
    let admin: AdminClient<DefaultClientContext> = client_config().create().expect("admin client");
    let results = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(admin.delete_topics(
            &[name],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ))
        .expect("delete topics");
    for result in results {
        if let Err((topic, code)) = result {
            panic!("delete topic {topic}: {code}");
        }
    }
}

/// A consumer reading every partition of `topic` from the beginning, read_committed, with a
/// group of its own that commits nothing.
pub fn committed_reader(topic: &str, partitions: i32) -> rdkafka::consumer::BaseConsumer {
    use rdkafka::{Offset, TopicPartitionList, consumer::Consumer};
    let consumer: rdkafka::consumer::BaseConsumer = client_config()
        .set("group.id", unique("reader"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition");
    }
    // The topic's leaders known first: the client would otherwise find them on its next
    // scan of unknown topics, up to a second later.
    _ = consumer.fetch_metadata(Some(topic), Duration::from_secs(10));
    consumer.assign(&list).expect("assign");
    consumer
}

/// Building catalog records in tests.
pub mod records {
    use chrono::{DateTime, Utc};
    use contracts::records::Meta;
    use rust_decimal::Decimal;

    /// The same contribution as a `ContributionRejected` record (the two share every field).
    pub fn rejected(
        c: contracts::records::ContributionApproved,
        reason: &str,
    ) -> contracts::records::ContributionRejected {
        contracts::records::ContributionRejected {
            meta: Meta {
                event_type: "people.ContributionRejected".to_owned(),
                ..c.meta
            },
            contribution_id: c.contribution_id,
            member_id: c.member_id,
            period_id: c.period_id,
            kind: c.kind,
            quantity: c.quantity,
            unit: c.unit,
            value: c.value,
            description: c.description,
            status: c.status,
            submitted_by: c.submitted_by,
            submitted_at: c.submitted_at,
            reviewed_by: c.reviewed_by,
            reviewed_at: c.reviewed_at,
            rejection_reason: Some(reason.to_owned()),
        }
    }

    /// An approved contribution of `value` (one hour of labour unless the test changes
    /// it), submitted and reviewed when `meta` says it occurred.
    pub fn approved(
        meta: Meta,
        contribution_id: &str,
        member_id: &str,
        period_id: &str,
        value: &str,
    ) -> contracts::records::ContributionApproved {
        use contracts::records::{ContributionKind, ContributionStatus, ContributionUnit};
        let at = meta.occurred_at;
        contracts::records::ContributionApproved {
            meta,
            contribution_id: contribution_id.to_owned(),
            member_id: member_id.to_owned(),
            period_id: period_id.to_owned(),
            kind: ContributionKind::Labor,
            quantity: dec("1"),
            unit: ContributionUnit::Hours,
            value: dec(value),
            description: "work".to_owned(),
            status: ContributionStatus::Approved,
            submitted_by: member_id.to_owned(),
            submitted_at: at,
            reviewed_by: Some("steward:test".to_owned()),
            reviewed_at: Some(at),
            rejection_reason: None,
        }
    }

    /// A decimal from its text (`"1000.01"`).
    pub fn dec(text: &str) -> Decimal {
        text.parse().expect("a decimal")
    }

    /// The `meta` of a record a test posts as a producer would.
    pub fn meta(
        tenant: &str,
        event_type: &str,
        event_id: &str,
        occurred_at: DateTime<Utc>,
    ) -> Meta {
        Meta {
            event_id: event_id.to_owned(),
            event_type: event_type.to_owned(),
            schema_version: 1,
            tenant_id: tenant.to_owned(),
            occurred_at,
            producer: "rest:test".to_owned(),
            actor: Some("steward:test".to_owned()),
            correlation_id: format!("corr-{event_id}"),
            causation_id: None,
        }
    }
}
