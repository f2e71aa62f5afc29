//! Fetch (API key 1) answered from devbroker's [`Log`](crate::log::Log).
//!
//! Guarantee: under read_committed, a response holds no batch at or beyond the
//! partition's last stable offset and no batch of an aborted transaction, and reports that
//! last stable offset. Long polls wake on the next append instead of sleeping out
//! `max_wait_ms`.

use std::time::Duration;

use rama::{Context, Service};
use tansu_sans_io::{
    ApiKey, ErrorCode, FetchRequest, FetchResponse, IsolationLevel,
    fetch_request::FetchTopic,
    fetch_response::{FetchableTopicResponse, PartitionData},
    record::deflated::Frame,
};
use tansu_storage::{Error, Result, TopicId, Topition};
use tokio::time::{Instant, timeout_at};

use crate::storage::DevStorage;

/// Upper bound of a response, whatever the client asks (as Tansu's own fetch).
const MAX_RESPONSE_BYTES: u32 = 5 * 1024 * 1024;

#[derive(Clone, Copy, Debug, Default)]
pub struct DevFetchService;

impl ApiKey for DevFetchService {
    const KEY: i16 = FetchRequest::KEY;
}

fn partition_error(partition: i32, code: ErrorCode) -> PartitionData {
    PartitionData::default()
        .partition_index(partition)
        .error_code(code.into())
        .high_watermark(-1)
        .last_stable_offset(Some(-1))
        .log_start_offset(Some(-1))
        .aborted_transactions(Some(vec![]))
        .preferred_read_replica(Some(-1))
        .records(None)
}

impl DevFetchService {
    /// One pass over every requested partition; returns the responses, the bytes found and
    /// how far each partition answered could be read at the end of the pass.
    async fn fetch_once(
        &self,
        storage: &DevStorage,
        topics: &[FetchTopic],
        isolation: IsolationLevel,
        max_bytes: u32,
    ) -> Result<(Vec<FetchableTopicResponse>, usize, Vec<(Topition, i64)>)> {
        let mut remaining = max_bytes as usize;
        let mut found = 0;
        let mut responses = Vec::with_capacity(topics.len());
        // (response, partition, topition) of every partition answered with records' end.
        let mut answered = Vec::new();
        for topic in topics {
            let known = storage.topic_info(&TopicId::from(topic)).await?;
            let mut partitions = Vec::new();
            for request in topic.partitions.as_deref().unwrap_or_default() {
                let Some(meta) = &known else {
                    partitions.push(partition_error(
                        request.partition,
                        ErrorCode::UnknownTopicOrPartition,
                    ));
                    continue;
                };
                let name = meta.name.clone();
                let count = meta.partitions;
                if !(0..count).contains(&request.partition) {
                    partitions.push(partition_error(
                        request.partition,
                        ErrorCode::UnknownTopicOrPartition,
                    ));
                    continue;
                }
                let topition = Topition::new(name, request.partition);
                let budget = remaining.min(request.partition_max_bytes.max(1) as usize);
                let read = storage
                    .log()
                    .with_partition(&topition, |p| {
                        if request.fetch_offset < p.log_start()
                            || request.fetch_offset > p.high_watermark()
                        {
                            Ok(None)
                        } else {
                            p.read(request.fetch_offset, budget, isolation).map(Some)
                        }
                    })
                    .and_then(|read| read)
                    .map_err(Error::Api)?;
                let Some(read) = read else {
                    partitions.push(partition_error(
                        request.partition,
                        ErrorCode::OffsetOutOfRange,
                    ));
                    continue;
                };
                let bytes: usize = read.batches.iter().map(|b| b.record_data.len()).sum();
                remaining = remaining.saturating_sub(bytes);
                found += bytes;
                answered.push((responses.len(), partitions.len(), topition));
                partitions.push(
                    PartitionData::default()
                        .partition_index(request.partition)
                        .error_code(ErrorCode::None.into())
                        .high_watermark(read.high_watermark)
                        .last_stable_offset(Some(read.last_stable))
                        .log_start_offset(Some(read.log_start))
                        .aborted_transactions(Some(vec![]))
                        .preferred_read_replica(Some(-1))
                        .records((!read.batches.is_empty()).then_some(Frame {
                            batches: read.batches,
                        })),
                );
            }
            responses.push(
                FetchableTopicResponse::default()
                    .topic(topic.topic.clone())
                    .topic_id(
                        known
                            .as_ref()
                            .and_then(|t| t.id)
                            .or(topic.topic_id)
                            .or(Some([0; 16])),
                    )
                    .partitions(Some(partitions)),
            );
        }
        // Each partition's high watermark as of the end of the pass, not of its own read:
        // a record appended to an earlier-read partition before one returned from a later
        // one then shows as lag, so a client merging topics by timestamp waits for it.
        let mut ends = Vec::with_capacity(answered.len());
        for (response, partition, topition) in answered {
            let (high, end) = storage
                .log()
                .with_partition(&topition, |p| {
                    (p.high_watermark(), readable_end(p, isolation))
                })
                .map_err(Error::Api)?;
            if let Some(data) = responses[response]
                .partitions
                .as_mut()
                .and_then(|ps: &mut Vec<PartitionData>| ps.get_mut(partition))
            {
                data.high_watermark = data.high_watermark.max(high);
            }
            ends.push((topition, end));
        }
        Ok((responses, found, ends))
    }
}

/// How far a partition can be read at `isolation`: its last stable offset for
/// read_committed readers, its high watermark otherwise.
fn readable_end(partition: &crate::log::Partition, isolation: IsolationLevel) -> i64 {
    match isolation {
        IsolationLevel::ReadCommitted => partition.last_stable(),
        IsolationLevel::ReadUncommitted => partition.high_watermark(),
    }
}

/// Whether any of these partitions can be read further than `ends` (or is gone).
fn moved(storage: &DevStorage, ends: &[(Topition, i64)], isolation: IsolationLevel) -> bool {
    ends.iter().any(|(topition, end)| {
        storage
            .log()
            .with_partition(topition, |p| readable_end(p, isolation) != *end)
            .unwrap_or(true)
    })
}

impl Service<DevStorage, FetchRequest> for DevFetchService {
    type Response = FetchResponse;
    type Error = Error;

    async fn serve(
        &self,
        ctx: Context<DevStorage>,
        req: FetchRequest,
    ) -> Result<Self::Response, Self::Error> {
        let storage = ctx.state();
        let topics = req.topics.unwrap_or_default();
        let isolation = req.isolation_level.map_or(
            Ok(IsolationLevel::ReadUncommitted),
            IsolationLevel::try_from,
        )?;
        let max_bytes = req.max_bytes.map_or(MAX_RESPONSE_BYTES, |max| {
            u32::try_from(max).unwrap_or(0).min(MAX_RESPONSE_BYTES)
        });
        let min_bytes = usize::try_from(req.min_bytes).unwrap_or(0).max(1);
        let deadline =
            Instant::now() + Duration::from_millis(u64::try_from(req.max_wait_ms).unwrap_or(0));

        let responses = 'answer: loop {
            // Register for the next append before looking, so none is missed.
            let mut appended = Box::pin(storage.log().appended());
            let (responses, found, ends) = self
                .fetch_once(storage, &topics, isolation, max_bytes)
                .await?;
            if found >= min_bytes || Instant::now() >= deadline {
                break responses;
            }
            // Appends anywhere wake the wait; look again only when one of these partitions
            // can be read further than it could, not for every record of other topics.
            loop {
                if timeout_at(deadline, appended.as_mut()).await.is_err() {
                    break 'answer self
                        .fetch_once(storage, &topics, isolation, max_bytes)
                        .await?
                        .0;
                }
                appended = Box::pin(storage.log().appended());
                if moved(storage, &ends, isolation) {
                    break;
                }
            }
        };

        Ok(FetchResponse::default()
            .throttle_time_ms(Some(0))
            .error_code(Some(ErrorCode::None.into()))
            .session_id(Some(0))
            .node_endpoints(Some(vec![]))
            .responses(Some(responses)))
    }
}
