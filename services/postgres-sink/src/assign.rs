//! The sink's consumer callbacks: an assigned partition starts at the offset Postgres
//! holds for it (read and claimed inside the rebalance), a revoked one drops its open work;
//! both are queued for the loop. Lag goes to the metrics.

use std::collections::BTreeMap;

use habitat_runtime::{
    health::dependency, kafka::Rebalances, metrics::Metrics, retry::RetryPolicy,
};
use rdkafka::{
    ClientContext, Offset, Statistics, TopicPartitionList,
    config::RDKafkaLogLevel,
    consumer::{BaseConsumer, Consumer, ConsumerContext},
    error::KafkaError,
    types::RDKafkaRespErr,
};
use tokio::runtime::Handle;
use tracing::warn;

use crate::store::{Partition, Store, is_transient};

pub(crate) enum Rebalanced {
    Revoked,
    Assigned(BTreeMap<Partition, i64>),
}

/// Consumer callbacks: partitions are assigned at the offsets stored in Postgres.
pub(crate) struct SinkContext {
    pub(crate) store: Store,
    pub(crate) handle: Handle,
    pub(crate) events: Rebalances<Rebalanced>,
    pub(crate) metrics: Metrics,
    pub(crate) inputs: Vec<String>,
    pub(crate) policy: RetryPolicy,
}

impl ClientContext for SinkContext {
    fn stats(&self, statistics: Statistics) {
        self.metrics.record_lag(&statistics, &self.inputs);
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        habitat_runtime::kafka::client_log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        habitat_runtime::kafka::client_error(&self.metrics.dependencies, &error, reason);
    }
}

impl ConsumerContext for SinkContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let partitions: Vec<Partition> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect();
                // The callback runs on the sink's own thread, never on the runtime's.
                // Postgres away or restarting is waited for, as anywhere in the sink.
                let claimed = self.policy.blocking(
                    "reading the stored offsets",
                    || {
                        let claimed = self.handle.block_on(self.store.claim(&partitions));
                        match &claimed {
                            Ok(_) => self.metrics.dependencies.reachable(dependency::DATABASE),
                            Err(error) if is_transient(error) => self
                                .metrics
                                .dependencies
                                .unreachable(dependency::DATABASE, error),
                            Err(_) => {}
                        }
                        claimed
                    },
                    is_transient,
                );
                match claimed {
                    Ok(stored) => {
                        for ((topic, partition), next) in &stored {
                            let offset = if *next < 0 {
                                Offset::Beginning
                            } else {
                                Offset::Offset(*next)
                            };
                            if let Err(error) = tpl.set_partition_offset(topic, *partition, offset)
                            {
                                self.events
                                    .fail(format!("offset of {topic}/{partition}: {error}"));
                            }
                        }
                        if let Err(error) = consumer.assign(tpl) {
                            self.events.fail(format!("assign: {error}"));
                        }
                        self.metrics
                            .assigned_partitions
                            .set(i64::try_from(stored.len()).unwrap_or(i64::MAX));
                        self.metrics.set_ready(true);
                        self.events.push(Rebalanced::Assigned(stored));
                    }
                    Err(error) => {
                        self.events
                            .fail(format!("cannot read the stored offsets: {error}"));
                    }
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.events.push(Rebalanced::Revoked);
                if let Err(error) = consumer.unassign() {
                    warn!(%error, "Unassign failed.");
                }
                self.metrics.assigned_partitions.set(0);
            }
            other => warn!(error = ?other, "Rebalance failed."),
        }
    }
}
